//! A short soak (`make soak` runs the long one): random I/O on four LUNs
//! for ten seconds with faults, task management and pulled devices must
//! end with every status explained, no command stuck and nothing leaked.

use std::time::Duration;

#[test]
fn a_short_soak_leaves_nothing_behind() {
    let r = simkern::soak::run(Duration::from_secs(10), 0x5eed_0001);
    assert!(r.clean(), "{r}\n{:?}", r.leaks);
    assert!(r.ios > 1_000 && r.good > 0, "{r}");
    assert!(r.faults > 0 && r.tmfs > 0 && r.aborted > 0, "{r}");
    assert!(r.unplugs > 0 && r.rebinds == r.unplugs, "{r}");
}
