//! The exposition as a scraper first sees it.

/// Every family says what it is from the start, those without a sample yet included, and
/// completed fills are counted from 0.
#[test]
fn families_are_described_before_their_first_event() {
    let m = super::Metrics::new();
    let text = String::from_utf8(m.render()).unwrap();
    for line in [
        "# HELP entrepot_token_requests_total ",
        "# TYPE entrepot_token_requests_total counter",
        "# HELP entrepot_upstream_ratelimit_remaining ",
        "# TYPE entrepot_upstream_ratelimit_remaining gauge",
        "entrepot_fills_completed_total 0",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    m.token_request("docker.io", "200");
    m.fill_completed();
    let text = String::from_utf8(m.render()).unwrap();
    assert_eq!(
        text.matches("# HELP entrepot_token_requests_total ")
            .count(),
        1
    );
    assert!(text.contains("entrepot_fills_completed_total 1"), "{text}");
}
