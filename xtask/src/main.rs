//! Project automation (`cargo xtask ...`): cross-builds and deploys the edge runtime to a board.
fn main() {}
