//! Runs a proptest strategy's cases and tallies what they logged: the
//! driver of the property tests against a model or shadow.
//!
//! Declared by the tests that use it:
//! `#[path = "common/tallied_cases.rs"] mod tallied_cases;`.

use std::cell::RefCell;
use std::collections::BTreeMap;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestRunner};

/// Runs `cases` cases of `strategy` (`PROPTEST_CASES` overrides) through
/// `case`, which adds the outcomes it logged to the tally; panics with
/// proptest's smallest failing input; prints the tally under `name`.
pub fn run_tallied<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    case: impl Fn(S::Value, &mut BTreeMap<String, u64>),
) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let totals = RefCell::new(BTreeMap::new());
    let result = runner.run(&strategy, |value| {
        case(value, &mut totals.borrow_mut());
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let totals = totals.into_inner();
    let steps: u64 = totals.values().sum();
    println!("{name}: {cases} cases, {steps} logged operations");
    for (outcome, n) in &totals {
        println!("  {outcome}: {n}");
    }
}
