use simkern::{Config, Machine};

#[test]
fn load_and_unload() {
    let m = Machine::boot(Config::standard());
    println!("{}", m.devlist());
    m.kldload().expect("kldload");
    println!("{}", m.devlist());
    println!("{:?}", m.modules());
    m.kldunload().expect("kldunload");
    println!("{}", m.devlist());
    println!("{}", m.dmesg());
    println!("{:?}", simkern::malloc::vmstat_m());
}
