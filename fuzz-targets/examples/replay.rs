//! Run one fuzz target body on the bytes of a file (a saved bounded-test case, a committed
//! reproducer or a cargo-fuzz artifact):
//! `cargo run -p lifeboat-fuzz-targets --example replay -- <target> <file>`.
//! With `LIFEBOAT_FUZZ_TRACE=1`, `engine_inputs` prints every input and output.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = lifeboat_fuzz_targets::TARGETS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let [target, file] = args.as_slice() else {
        eprintln!("usage: replay <{}> <file>", names.join("|"));
        std::process::exit(2);
    };
    let Some(body) = lifeboat_fuzz_targets::target(target) else {
        eprintln!(
            "unknown target {target:?}; the targets are {}",
            names.join(", ")
        );
        std::process::exit(2);
    };
    let data = match std::fs::read(file) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot read {file}: {e}");
            std::process::exit(2);
        }
    };
    body(&data);
    println!("{target}: no invariant violated on {} bytes", data.len());
}
