//! Rate-limit utilisation and request economy (filled in once the simulators are complete).
fn main() {}
