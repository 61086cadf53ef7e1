//! nexctl: command-line client for nexd.

fn main() {
    eprintln!("nexctl: not yet implemented");
    std::process::exit(69);
}
