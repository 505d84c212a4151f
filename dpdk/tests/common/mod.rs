//! EAL start-up shared by the tests of one test binary (the EAL starts once per process).
#![allow(dead_code)]

use std::sync::OnceLock;

use photon_dpdk::Eal;

/// Arguments that need no NIC and no hugepages: the tests run on any Linux machine.
pub fn test_eal_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "photon-test",
        "--no-huge",
        "--no-shconf",
        "--no-pci",
        "-m",
        "512",
        "--log-level",
        "lib.eal:error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

pub fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        Eal::init(&test_eal_args(&[])).expect("EAL starts with --no-huge and virtual devices")
    })
}
