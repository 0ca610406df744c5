//! The harnesses reach past the signature and token checks (in a test binary of its own: the
//! corpus replay changes the shared harness store).
#![allow(clippy::unwrap_used, clippy::panic)]

/// The harnesses reach past the signature and token checks: signed seeds succeed.
#[test]
fn the_harnesses_get_through_the_front_door() {
    let create = br#"{"actor":{"user_id":"carol","email":"carol@example.com","roles":[]},"channel_id":"ch1","account_id":"123456789012","jira":"OPS-2","reason":"x","requested_duration_minutes":30}"#;
    let mut input = vec![0u8];
    input.extend_from_slice(create);
    assert_eq!(jit_fuzzing::api_bodies(&input), 201, "a signed create");
    assert_eq!(
        jit_fuzzing::api_bodies(b"\x02status=PENDING"),
        200,
        "a signed list"
    );
    assert_eq!(jit_fuzzing::api_bodies(b"\x00{\"actor\":1}"), 400);
    assert_eq!(
        jit_fuzzing::slash(b"text=help"),
        200,
        "the token is accepted"
    );
}
