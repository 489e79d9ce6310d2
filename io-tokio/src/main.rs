//! The `lifeboat` binary.

fn main() {
    eprintln!("lifeboat: the adapter is coming; see README.md");
}
