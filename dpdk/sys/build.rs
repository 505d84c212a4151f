//! Finds the system DPDK with pkg-config, compiles the C shim with DPDK's own cflags and
//! generates narrow bindings with bindgen. Nothing is hard-coded: the library list, include
//! paths, defines and `-march` all come from `pkg-config libdpdk`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// DPDK 22.11 LTS is what Debian 12 ships; older releases lack `rte_thread_register`'s
/// current semantics and the RTE_ETH_* names the shim uses.
const MIN_DPDK: &str = "22.11";

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = pkg_config::Config::new()
        .atleast_version(MIN_DPDK)
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!(
                "photon-dpdk-sys needs DPDK >= {MIN_DPDK} found through pkg-config `libdpdk`.\n\
                 Run scripts/setup.sh (it installs Debian's libdpdk-dev), or set PKG_CONFIG_PATH.\n\
                 pkg-config said: {e}"
            )
        });

    // The pkg-config crate keeps only -I/-D from --cflags; DPDK also needs `-include rte_config.h`
    // and its `-march`, so take the whole flag list as pkg-config prints it.
    let cflags = pkg_config_cflags();

    let mut build = cc::Build::new();
    build
        .file("csrc/shim.c")
        .include("csrc")
        .opt_level(3)
        .warnings(false);
    for flag in &cflags {
        build.flag(flag);
    }
    build.compile("photon_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("csrc/shim.h")
        .clang_args(cflags.iter())
        .clang_args(lib.include_paths.iter().map(|p| format!("-I{}", p.display())))
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        // Functions: the shim's wrappers plus the exported (non-inline) DPDK calls we use.
        .allowlist_function("photon_.*")
        .allowlist_function("rte_eal_init")
        .allowlist_function("rte_eal_cleanup")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_get_tsc_hz")
        .allowlist_function("rte_thread_register")
        .allowlist_function("rte_thread_unregister")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_mempool_avail_count")
        .allowlist_function("rte_mempool_in_use_count")
        .allowlist_function("rte_mempool_lookup")
        .allowlist_function("rte_eth_dev_count_avail")
        .allowlist_function("rte_eth_dev_get_port_by_name")
        .allowlist_function("rte_eth_dev_socket_id")
        .allowlist_function("rte_eth_rx_queue_setup")
        .allowlist_function("rte_eth_tx_queue_setup")
        .allowlist_function("rte_eth_dev_start")
        .allowlist_function("rte_eth_dev_stop")
        .allowlist_function("rte_eth_dev_close")
        .allowlist_function("rte_eth_promiscuous_enable")
        .allowlist_function("rte_eth_dev_is_valid_port")
        .allowlist_function("rte_ring_create")
        .allowlist_function("rte_ring_free")
        .allowlist_function("rte_dev_probe")
        .allowlist_var("RING_F_.*")
        .allowlist_var("RTE_MAX_LCORE")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE")
        .allowlist_var("SOCKET_ID_ANY")
        // Fast-path structures stay opaque: Rust only holds pointers and goes through the shim.
        .opaque_type("rte_mbuf")
        .opaque_type("rte_mempool")
        .opaque_type("rte_ring")
        .opaque_type("rte_eth_rxconf")
        .opaque_type("rte_eth_txconf")
        .layout_tests(false)
        .generate_comments(false)
        .generate()
        .expect("bindgen could not generate DPDK bindings (is libclang installed? run scripts/setup.sh)");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");
}

fn pkg_config_cflags() -> Vec<String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(pkg_config)
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("run pkg-config --cflags libdpdk");
    assert!(out.status.success(), "pkg-config --cflags libdpdk failed");
    let text = String::from_utf8(out.stdout).expect("pkg-config output is UTF-8");
    text.split_whitespace().map(str::to_owned).collect()
}
