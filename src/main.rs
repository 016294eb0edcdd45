use glommio::{LocalExecutorBuilder, Placement};
fn main() {
    let h = LocalExecutorBuilder::new(Placement::Fixed(0))
        .io_memory(64 << 10)
        .ring_depth(128)
        .spawn(|| async move { println!("hello from glommio"); })
        .unwrap();
    h.join().unwrap();
}
