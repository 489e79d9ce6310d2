//! Run one fuzz target body on the bytes of a file (a saved bounded-test case or a cargo-fuzz
//! artifact): `cargo run -p lifeboat-fuzz-targets --example replay -- <target> <file>`.
//! With `LIFEBOAT_FUZZ_TRACE=1`, `engine_inputs` prints every input and output.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, file] = args.as_slice() else {
        eprintln!("usage: replay <name_parser|journal_decoder|engine_inputs> <file>");
        std::process::exit(2);
    };
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
    match target.as_str() {
        "name_parser" => lifeboat_fuzz_targets::name_parser(&data),
        "journal_decoder" => lifeboat_fuzz_targets::journal_decoder(&data),
        "engine_inputs" => lifeboat_fuzz_targets::engine_inputs(&data),
        other => {
            eprintln!("unknown target {other:?}");
            std::process::exit(2);
        }
    }
    println!("{target}: no invariant violated on {} bytes", data.len());
}
