fn main() {
    eprintln!("lifeboat-sim: coming; see README.md");
}
