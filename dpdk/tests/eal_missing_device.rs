//! A device that does not exist is an error value at start-up.
mod common;

use photon_dpdk::{Eal, Error};

#[test]
fn nonexistent_device_is_an_error_value() {
    let args = common::test_eal_args(&["--vdev", "net_nosuchdriver0"]);
    match Eal::init(&args) {
        Err(Error::EalInit { message, args, .. }) => {
            assert!(!message.is_empty());
            assert!(
                args.contains("net_nosuchdriver0"),
                "the error names the arguments: {args}"
            );
        }
        other => panic!("expected EalInit error, got {other:?}"),
    }
}
