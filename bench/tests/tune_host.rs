//! `scripts/tune-host.sh`: `--check` on this very machine (whatever it is, every setting gets a
//! row and the script exits 0), and `--check` / `--apply` against a fake `/proc` + `/sys` tree
//! (`TUNE_HOST_ROOT`) whose values are known, so that each verdict and each change is checked
//! without touching the host.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every SETTING the check prints, in order.
const SETTINGS: [&str; 21] = [
    "cpufreq governor",
    "isolcpus",
    "nohz_full",
    "rcu_nocbs",
    "irqbalance",
    "irq affinity",
    "kernel threads",
    "workqueue cpumask",
    "transparent hugepages",
    "thp defrag",
    "swap",
    "vm.swappiness",
    "numa layout",
    "kernel.numa_balancing",
    "c-states (cpuidle)",
    "clocksource",
    "timer slack",
    "net.core.busy_poll",
    "net.core.busy_read",
    "memlock limit",
    "smt siblings",
];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tune-host.sh")
}

fn run(args: &[&str], fake_root: Option<&Path>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).args(args);
    match fake_root {
        Some(root) => cmd.env("TUNE_HOST_ROOT", root),
        None => cmd.env_remove("TUNE_HOST_ROOT"),
    };
    cmd.output().expect("bash runs the script")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The table rows: (status, setting, rest of the line).
fn rows(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter(|l| {
            ["ok ", "differs ", "unknown "]
                .iter()
                .any(|s| l.starts_with(s))
        })
        .map(|l| {
            let (status, rest) = l.split_once(' ').unwrap();
            let rest = rest.trim_start();
            let setting = SETTINGS
                .iter()
                .filter(|s| rest.starts_with(*s))
                .max_by_key(|s| s.len())
                .unwrap_or_else(|| panic!("row of an unknown setting: {l}"));
            (
                status.to_owned(),
                (*setting).to_owned(),
                rest[setting.len()..].trim().to_owned(),
            )
        })
        .collect()
}

fn status_of(out: &str, setting: &str) -> (String, String) {
    rows(out)
        .into_iter()
        .find(|(_, s, _)| s == setting)
        .map(|(st, _, rest)| (st, rest))
        .unwrap_or_else(|| panic!("no row for {setting} in\n{out}"))
}

#[test]
fn check_on_this_host_prints_one_row_per_setting_and_exits_0() {
    let o = run(&["--check"], None);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "exit {:?}\n{out}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let rows = rows(&out);
    let names: Vec<&str> = rows.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(names, SETTINGS, "{out}");
    for (_, setting, rest) in &rows {
        assert!(
            !rest.is_empty(),
            "{setting} has recommended and current values"
        );
    }
    assert!(out.contains("STATUS   SETTING"), "header row");
    assert!(
        out.contains("Kernel command line"),
        "boot settings are printed, not applied"
    );
}

#[test]
fn help_names_every_flag() {
    let o = run(&["--help"], None);
    assert!(o.status.success());
    let out = stdout(&o);
    for flag in [
        "--check",
        "--apply",
        "--dry-run",
        "--cores",
        "TUNE_HOST_ROOT",
    ] {
        assert!(out.contains(flag), "--help explains {flag}");
    }
}

#[test]
fn bad_arguments_exit_2_with_a_reason() {
    for (args, reason) in [
        (
            &["--check", "--cores", "4096"][..],
            "CPU 4096 is not online",
        ),
        (&["--check", "--cores", "a-b"][..], "expected a CPU list"),
        (&[][..], "give --check or --apply"),
        (&["--check", "--apply"][..], "one of --check or --apply"),
        (&["--check", "--dry-run"][..], "--dry-run goes with --apply"),
        (&["--frobnicate"][..], "unknown argument"),
    ] {
        let o = run(args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(reason), "{args:?}: {err}");
    }
}

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, format!("{text}\n")).unwrap();
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel))
        .unwrap()
        .trim()
        .to_owned()
}

/// A 4-CPU host on two NUMA nodes, the engine to be pinned on 2 and 3, mostly untuned.
fn fake_host(root: &Path) {
    // rcu_nocbs after `--` belongs to init, not the kernel.
    put(
        root,
        "proc/cmdline",
        "BOOT_IMAGE=/vmlinuz isolcpus=managed_irq,domain,2,3 nohz_full=2-3 quiet -- rcu_nocbs=2,3",
    );
    put(root, "proc/cpuinfo", "flags\t\t: fpu vme hypervisor");
    put(
        root,
        "proc/swaps",
        "Filename Type Size Used Priority\n/swapfile file 1048576 1024 -2",
    );
    put(root, "proc/sys/vm/swappiness", "60");
    put(root, "proc/sys/kernel/numa_balancing", "1");
    put(root, "proc/sys/net/core/busy_poll", "0");
    put(root, "proc/sys/net/core/busy_read", "50");
    put(root, "proc/self/timerslack_ns", "1");
    put(
        root,
        "proc/self/status",
        "Name:\tbash\nCapEff:\t0000000000000000",
    );
    put(root, "proc/irq/24/smp_affinity_list", "0-3");
    put(root, "proc/irq/25/smp_affinity_list", "0-1");
    put(root, "proc/4242/comm", "irqbalance");
    // Kernel threads (flags: PF_KTHREAD 0x200000, PF_NO_SETAFFINITY 0x4000000). Only kdamond.0
    // is movable and may run on 2,3: ksoftirqd/2 is per-CPU, the kworker is the workqueue
    // mask's, khugepaged is already off 2,3, and pid 500 is a user process.
    for (pid, comm, flags, cpus) in [
        (83, "kdamond.0", 0x20_0040, "0-3"),
        (20, "ksoftirqd/2", 0x20_0040, "2"),
        (30, "kworker/u8:1-events_unbound", 0x420_0060, "0-3"),
        (84, "khugepaged", 0x20_0040, "0-1"),
        (500, "my prog) x", 0x40_0100, "0-3"),
    ] {
        put(
            root,
            &format!("proc/{pid}/stat"),
            &format!("{pid} ({comm}) S 2 0 0 0 -1 {flags} 0 0 0 0 1 2 0 0 20 0 1 0 5"),
        );
        put(root, &format!("proc/{pid}/comm"), comm);
        put(
            root,
            &format!("proc/{pid}/status"),
            &format!("Name:\t{comm}\nCpus_allowed:\tf\nCpus_allowed_list:\t{cpus}"),
        );
    }
    put(root, "sys/devices/virtual/workqueue/cpumask", "f");
    put(
        root,
        "etc/default/irqbalance",
        "IRQBALANCE_BANNED_CPULIST=2-3",
    );
    let cpu = "sys/devices/system/cpu";
    put(root, &format!("{cpu}/online"), "0-3");
    put(root, &format!("{cpu}/isolated"), "2-3");
    put(root, &format!("{cpu}/smt/control"), "on");
    put(root, &format!("{cpu}/cpuidle/current_driver"), "intel_idle");
    for c in 0..4 {
        let gov = if c == 3 { "powersave" } else { "performance" };
        put(root, &format!("{cpu}/cpu{c}/cpufreq/scaling_governor"), gov);
        for (s, name, lat) in [(0, "POLL", 0), (1, "C1", 2), (2, "C6", 133)] {
            let d = format!("{cpu}/cpu{c}/cpuidle/state{s}");
            put(root, &format!("{d}/name"), name);
            put(root, &format!("{d}/latency"), &lat.to_string());
            put(root, &format!("{d}/disable"), "0");
        }
    }
    put(
        root,
        &format!("{cpu}/cpu2/topology/thread_siblings_list"),
        "2",
    );
    put(
        root,
        &format!("{cpu}/cpu3/topology/thread_siblings_list"),
        "1,3",
    );
    put(
        root,
        "sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never",
    );
    put(
        root,
        "sys/kernel/mm/transparent_hugepage/defrag",
        "always defer defer+madvise [madvise] never",
    );
    put(root, "sys/devices/system/node/node0/cpulist", "0-1");
    put(root, "sys/devices/system/node/node1/cpulist", "2-3");
    let cs = "sys/devices/system/clocksource/clocksource0";
    put(root, &format!("{cs}/current_clocksource"), "hpet");
    put(
        root,
        &format!("{cs}/available_clocksource"),
        "tsc hpet acpi_pm ",
    );
}

#[test]
fn check_judges_a_known_host_truthfully() {
    let dir = tempfile::tempdir().unwrap();
    fake_host(dir.path());
    let o = run(&["--check", "--cores", "2,3"], Some(dir.path()));
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    let expect = [
        ("cpufreq governor", "differs", "cpu3=powersave"),
        ("isolcpus", "ok", "isolcpus=managed_irq,domain,2,3"),
        ("nohz_full", "ok", "nohz_full=2-3"),
        ("rcu_nocbs", "differs", "absent"),
        ("irqbalance", "ok", "running (pid 4242), banned CPUs 2-3"),
        ("irq affinity", "differs", "1 of 2 IRQs may run on 2,3"),
        (
            "kernel threads",
            "differs",
            "1 may run on 2,3 (e.g. kdamond.0 -> 0-3)",
        ),
        ("workqueue cpumask", "differs", "f (includes 2,3)"),
        ("transparent hugepages", "differs", "always"),
        ("thp defrag", "ok", "madvise"),
        ("swap", "differs", "1 device(s) active, 1024 KiB used"),
        ("vm.swappiness", "differs", "60"),
        ("numa layout", "ok", "2,3 on node 1"),
        ("kernel.numa_balancing", "differs", "1"),
        ("c-states (cpuidle)", "differs", "cpu2: C6 133 us"),
        ("clocksource", "differs", "hpet"),
        ("timer slack", "ok", "1 ns"),
        ("net.core.busy_poll", "differs", "0"),
        ("net.core.busy_read", "ok", "50"),
        ("smt siblings", "differs", "cpu3: 1 online"),
    ];
    for (setting, status, current) in expect {
        let (got, rest) = status_of(&out, setting);
        assert_eq!(got, status, "{setting}: {rest}");
        assert!(
            rest.contains(current),
            "{setting}: {rest:?} lacks {current:?}"
        );
    }
    assert!(
        out.contains("virtual machine"),
        "hypervisor flag is reported"
    );
}

#[test]
fn apply_changes_run_time_settings_prints_reverts_and_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fake_host(root);
    let cpu = "sys/devices/system/cpu";

    let o = run(&["--apply", "--dry-run", "--cores", "2,3"], Some(root));
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("would change  vm.swappiness"), "{out}");
    assert_eq!(
        read(root, "proc/sys/vm/swappiness"),
        "60",
        "dry run writes nothing"
    );
    assert_eq!(
        read(root, &format!("{cpu}/cpu3/cpufreq/scaling_governor")),
        "powersave"
    );

    let o = run(&["--apply", "--cores", "2,3"], Some(root));
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        read(root, &format!("{cpu}/cpu3/cpufreq/scaling_governor")),
        "performance"
    );
    assert_eq!(read(root, "proc/irq/24/smp_affinity_list"), "0,1");
    assert_eq!(
        read(root, "proc/irq/25/smp_affinity_list"),
        "0-1",
        "already off 2,3"
    );
    assert_eq!(
        read(root, "sys/kernel/mm/transparent_hugepage/enabled"),
        "never"
    );
    assert_eq!(
        read(root, "sys/kernel/mm/transparent_hugepage/defrag"),
        "always defer defer+madvise [madvise] never",
        "madvise is left alone"
    );
    assert_eq!(read(root, "proc/sys/vm/swappiness"), "10");
    assert_eq!(read(root, "proc/sys/kernel/numa_balancing"), "0");
    assert_eq!(read(root, "proc/sys/net/core/busy_poll"), "50");
    assert_eq!(
        read(root, &format!("{cpu}/cpu2/cpuidle/state2/disable")),
        "1"
    );
    assert_eq!(
        read(root, &format!("{cpu}/cpu2/cpuidle/state1/disable")),
        "0",
        "C1 is shallow enough"
    );
    assert_eq!(
        read(root, &format!("{cpu}/cpu0/cpuidle/state2/disable")),
        "0",
        "housekeeping CPUs untouched"
    );
    assert_eq!(
        read(
            root,
            "sys/devices/system/clocksource/clocksource0/current_clocksource"
        ),
        "tsc"
    );
    // Each change says how to undo it; system commands are not run under a fake root.
    assert!(out.contains("revert: echo 'powersave' > "), "{out}");
    assert!(out.contains("revert: echo '60' > "), "{out}");
    assert!(
        out.contains("would run     swap                       swapoff -a"),
        "{out}"
    );
    assert!(out.contains("would run     irqbalance"), "{out}");
    // The movable kernel thread goes to the housekeeping CPUs, and only it; so do unbound
    // workqueues.
    assert!(
        out.contains("would run     kthread 83 (kdamond.0)") && out.contains("taskset -pc 0,1 83"),
        "{out}"
    );
    for other in ["kthread 20 ", "kthread 30 ", "kthread 84 ", "kthread 500 "] {
        assert!(!out.contains(other), "{other} is not to be moved: {out}");
    }
    assert_eq!(read(root, "sys/devices/virtual/workqueue/cpumask"), "3");
    assert!(out.contains("not changed   smt sibling cpu1"), "{out}");
    assert!(
        out.contains("isolcpus=managed_irq,domain,2,3 nohz_full=2,3 rcu_nocbs=2,3"),
        "{out}"
    );
    let cmdline = read(root, "proc/cmdline");
    assert!(
        cmdline.starts_with("BOOT_IMAGE"),
        "boot configuration untouched"
    );

    // What --apply changed now checks ok.
    let out = stdout(&run(&["--check", "--cores", "2,3"], Some(root)));
    for setting in [
        "cpufreq governor",
        "irq affinity",
        "transparent hugepages",
        "vm.swappiness",
        "kernel.numa_balancing",
        "c-states (cpuidle)",
        "clocksource",
        "net.core.busy_poll",
    ] {
        assert_eq!(
            status_of(&out, setting).0,
            "ok",
            "{setting} after --apply:\n{out}"
        );
    }
}
