//! Replays `fuzz/corpus/roster/` through the roster fuzz entry (`PHOTON_WRITE_SEEDS=1` writes
//! the seeds built here).
#[path = "../../fuzz/corpus_replay.rs"]
mod corpus_replay;

use photon_protocol::identity::PublicKey;
use photon_protocol::roster::{fuzz_roster, Member, MemberRole, Roster, RosterSignature};
use photon_protocol::shortid::ShortIdRange;

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let members = vec![
        Member {
            key: PublicKey([0x11; 32]),
            role: MemberRole::Gateway,
        },
        Member {
            key: PublicKey([0x22; 32]),
            role: MemberRole::Gateway,
        },
        Member {
            key: PublicKey([0x33; 32]),
            role: MemberRole::Relay {
                short_ids: ShortIdRange::new(0, 1 << 27).unwrap(),
            },
        },
    ];
    let unsigned = Roster::new(3, 2_000_000_000, members).unwrap();
    let mut signed = unsigned.clone();
    // A signature that parses but does not verify: the fuzzer mutates from here.
    signed.signatures.push(RosterSignature {
        operator: PublicKey([0x44; 32]),
        signature: [0x55; 64],
    });
    let one = Roster::new(
        1,
        1,
        vec![Member {
            key: PublicKey([0x66; 32]),
            role: MemberRole::Gateway,
        }],
    )
    .unwrap();
    vec![
        ("unsigned3", unsigned.emit()),
        ("signed3", signed.emit()),
        ("one_gateway", one.emit()),
        ("short", b"PHRS\x01".to_vec()),
    ]
}

#[test]
fn roster_corpus() {
    let dir = corpus_replay::corpus_dir(env!("CARGO_MANIFEST_DIR"), "roster");
    corpus_replay::replay_with_seeds(&dir, &seeds(), fuzz_roster);
}
