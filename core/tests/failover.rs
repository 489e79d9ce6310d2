//! Failover specifications, driven through the tiny deterministic harness.

mod common;
use common::*;
use lifeboat_core::engine::Role;
use lifeboat_core::report::Report;

#[test]
fn steady_state_ships_and_restores_with_no_alerts() {
    let mut h = Harness::new(config(2));
    h.run(60_000);
    assert_eq!(h.sites[0].role(), Role::Primary, "{:#?}", h.audits);
    assert_eq!(h.sites[1].role(), Role::Secondary);
    assert!(h.db[0].write_pos[0] > 400);
    assert!(
        h.db[1].restored[0] > 0,
        "nothing restored: {:?}",
        h.commands.iter().take(30).collect::<Vec<_>>()
    );
    let bad: Vec<_> = h
        .alerts
        .iter()
        .filter(|(_, a)| a.change != lifeboat_core::alert::AlertChange::Cleared)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(h.split_brain.is_none());
}

#[test]
fn primary_site_lost_fails_over_and_reports_rpo() {
    let mut h = Harness::new(config(2));
    h.run(30_000);
    h.kill(A);
    let killed_at = h.t;
    h.run(30_000);
    assert_eq!(h.sites[1].role(), Role::Primary, "{:#?}", h.audits);
    let Some(Report::Failover {
        rpo_lower,
        rpo_upper,
        rto_ms,
        writable_at,
        ..
    }) = h.failover_report().cloned()
    else {
        panic!("no failover report: {:#?}", h.audits)
    };
    let true_loss = h.db[0].write_pos[0] - h.db[1].restored[0].min(h.db[0].write_pos[0]);
    let _ = writable_at;
    println!(
        "killed_at={killed_at} rto_ms={rto_ms} rpo=[{rpo_lower},{rpo_upper:?}] true={true_loss}"
    );
    assert!(
        rpo_lower <= true_loss as u64 && rpo_upper.is_some_and(|u| true_loss <= u),
        "rpo [{rpo_lower},{rpo_upper:?}] true {true_loss}"
    );
    assert!(h.split_brain.is_none());
    assert_eq!(h.db[1].identity_switches, 1);
}
