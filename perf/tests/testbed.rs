//! Brings the testbed up with 2 gateways and 2 relays, checks that every namespace reaches the
//! others (ping), that the rate limit is in place, and that `down` leaves nothing behind.
//! Fails, naming what is missing, where network namespaces cannot be made (not root, no `ip`)
//! or there is no `ping`: scripts/setup.sh installs what it needs.

use photon_perf::testbed::{self, gateway_addr, relay_addr, Testbed, TestbedConfig};

#[test]
fn testbed_up_ping_down() {
    if let Err(why) = testbed::can_make_namespaces() {
        panic!("testbed_up_ping_down cannot run: {why}");
    }
    assert!(
        std::process::Command::new("ping")
            .arg("-V")
            .output()
            .is_ok(),
        "testbed_up_ping_down cannot run: no ping (iputils-ping; scripts/setup.sh installs it)"
    );
    // A prefix of our own: other test runs on this machine use theirs.
    let prefix = format!("pt{}", std::process::id() % 100_000);
    let tb = Testbed::up(TestbedConfig {
        prefix: prefix.clone(),
        gateways: 2,
        relays: 2,
        rate: Some("1gbit".into()),
    })
    .expect("testbed up");
    assert_eq!(
        testbed::namespaces(&prefix).len(),
        5,
        "switch + 2 relays + 2 gateways"
    );
    let all = [
        (tb.gateway_ns(0), gateway_addr(0)),
        (tb.gateway_ns(1), gateway_addr(1)),
        (tb.relay_ns(0), relay_addr(0)),
        (tb.relay_ns(1), relay_addr(1)),
    ];
    for (from, _) in &all {
        for (to, addr) in &all {
            if from != to {
                assert!(
                    tb.ping(from, *addr).unwrap(),
                    "{from} cannot reach {to} ({addr})"
                );
            }
        }
    }
    let qdisc = tb
        .command_in(&tb.gateway_ns(0), "tc")
        .args(["qdisc", "show", "dev", "eth0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&qdisc.stdout).contains("tbf"));
    tb.down().expect("testbed down");
    assert!(testbed::namespaces(&prefix).is_empty());

    // A crash leaves namespaces behind: `down` still removes them by prefix.
    let tb = Testbed::up(TestbedConfig {
        prefix: prefix.clone(),
        gateways: 1,
        relays: 1,
        rate: None,
    })
    .expect("testbed up again");
    std::mem::forget(tb);
    assert_eq!(testbed::namespaces(&prefix).len(), 3);
    testbed::down(&prefix).expect("down by prefix");
    assert!(testbed::namespaces(&prefix).is_empty());
}
