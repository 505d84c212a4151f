//! A bad EAL argument is an error value with DPDK's message, not an abort.
mod common;

use photon_dpdk::{Eal, Error};

#[test]
fn bad_argument_is_an_error_value() {
    let args = common::test_eal_args(&["--definitely-not-an-eal-option"]);
    match Eal::init(&args) {
        Err(Error::EalInit {
            errno,
            message,
            args,
        }) => {
            assert_eq!(errno, 22, "EINVAL");
            assert!(message.contains("Invalid argument"), "{message}");
            assert!(args.contains("--definitely-not-an-eal-option"));
        }
        other => panic!("expected EalInit error, got {other:?}"),
    }
    assert_eq!(Eal::init(&args).unwrap_err(), Error::EalAlreadyInitialized);
}
