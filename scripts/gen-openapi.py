#!/usr/bin/env python3
"""Writes docs/openapi.json, the API contract. crates/jit-server/tests/openapi.rs checks the
running server against it (every route answers, answers carry the required fields, errors
have the error shape). Edit this script, run it, commit both."""
import json

S = {"type": "string"}
I = {"type": "integer"}
B = {"type": "boolean"}
NS = {"type": ["string", "null"]}
TS = {"type": "string", "format": "date-time"}
NTS = {"type": ["string", "null"], "format": "date-time"}

actor = {"type": "object", "required": ["user_id"], "properties": {
    "user_id": S, "email": S, "roles": {"type": "array", "items": {"enum": ["system_admin", "channel_admin"]}}},
    "description": "The acting Mattermost user, as proven by the bridge. The existing plugin's <role>_mm_user_id / <role>_email fields are accepted instead."}
error = {"type": "object", "required": ["code", "message"], "properties": {"code": S, "message": S}}
auth_error = {"type": "object", "required": ["code"], "properties": {"code": {"enum": [
    "missing_header", "malformed_header", "unsupported_version", "stale_timestamp", "unknown_key",
    "bad_signature", "replayed_nonce", "no_keys", "nonce_store_unavailable"]}}}
request_view = {"type": "object", "required": [
    "request_id", "status", "channel_id", "account_id", "requester_mm_user_id", "requester_email",
    "requested_duration_minutes", "created_at", "pending_deadline", "required_approvals", "approvals",
    "break_glass", "review_pending", "version"], "properties": {
    "request_id": S, "status": {"enum": ["PENDING", "APPROVED", "GRANTED", "EXPIRED", "REVOKED", "DENIED", "CANCELLED", "TIMED_OUT", "ERROR"]},
    "channel_id": S, "account_id": S, "permission_set_arn": NS, "requester_mm_user_id": S, "requester_email": S,
    "jira": NS, "reason": NS, "requested_duration_minutes": I, "created_at": TS, "pending_deadline": TS,
    "required_approvals": I, "approvals": {"type": "array", "items": {"type": "object", "required": ["user_id", "at"],
        "properties": {"user_id": S, "email": NS, "at": TS}}},
    "approved_at": NTS, "granted_at": NTS, "end_time": NTS, "closed_at": NTS, "closed_by": NS, "close_reason": NS,
    "error_message": NS, "break_glass": B, "review_pending": B, "post_id": NS, "version": I}}
binding_view = {"type": "object", "required": ["channel_id", "accounts", "bindings", "approvers", "policy", "version"], "properties": {
    "channel_id": S, "accounts": {"type": "array", "items": S},
    "bindings": {"type": "array", "items": {"type": "object", "required": ["account_id", "permission_set_arns"]}},
    "approvers": {"type": "array", "items": S}, "version": I,
    "policy": {"type": "object", "required": ["approvers", "required_approvals", "allow_self_approval", "max_request_hours",
        "pending_timeout_minutes", "require_ticket", "break_glass_enabled", "break_glass_max_minutes"]}}}
audit_view = {"type": "object", "required": ["seq", "at", "type", "data", "prev_hash", "hash"]}

def ref(n): return {"$ref": f"#/components/schemas/{n}"}
def resp(code, schema, desc="OK"): return {str(code): {"description": desc, "content": {"application/json": {"schema": schema}}}}
def errs(*codes):
    out = {"401": {"description": "signature rejected", "content": {"application/json": {"schema": ref("AuthError")}}}}
    for c in codes:
        out[str(c)] = {"description": "error", "content": {"application/json": {"schema": ref("Error")}}}
    return out
def body(props, required):
    return {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": required,
            "properties": props}}}}
idem = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": S,
        "description": "A retried POST with the same key and body returns the first answer."}
rid = {"name": "id", "in": "path", "required": True, "schema": S}
sec = [{"xjit": []}]

def write(summary, props, required, ok_schema, ok=200, extra=(400, 403, 404, 409, 413, 415, 422), path_id=False):
    op = {"summary": summary, "security": sec, "parameters": ([rid] if path_id else []) + [idem],
          "requestBody": body(props, required), "responses": {**resp(ok, ok_schema), **errs(*extra)}}
    return {"post": op}

def q(name, desc, schema=S): return {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}

paths = {
    "/healthz": {"get": {"summary": "Liveness (no signature)", "responses": resp(200, {"type": "object", "required": ["status"]})}},
    "/readyz": {"get": {"summary": "Readiness: store reachable and backend key ring loaded (no signature)",
        "responses": {**resp(200, {"type": "object", "required": ["ready", "store", "backend_ring"]}),
                      **resp(503, {"type": "object", "required": ["ready"]}, "not ready")}}},
    "/metrics": {"get": {"summary": "Prometheus text: key rings and when each key last verified a request (no signature)",
        "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    "/requests": {
        "post": write("Ask for access", {"actor": actor, "channel_id": S, "account_id": S, "permission_set_arn": S,
            "jira": S, "ticket": S, "reason": S, "requested_duration_minutes": {"type": ["integer", "string"]}, "break_glass": B},
            ["channel_id", "account_id", "requested_duration_minutes"], ref("Request"), ok=201)["post"],
        "get": {"summary": "List requests, newest first", "security": sec, "parameters": [
            q("channel_id", ""), q("account_id", ""), q("requester_email", ""), q("requester_mm_user_id", ""),
            q("status", "one or more, comma-separated"), q("start_date", "RFC 3339 or YYYY-MM-DD (created at or after)"),
            q("end_date", "RFC 3339 or YYYY-MM-DD (created before; a date includes that day)"),
            q("limit", "1-200, default 50", I), q("next_token", "from the previous page")],
            "responses": {**resp(200, {"type": "object", "required": ["requests", "count", "next_token"],
                "properties": {"requests": {"type": "array", "items": ref("Request")}, "count": I, "next_token": NS}}), **errs(400)}}},
    "/requests/{id}": {"get": {"summary": "One request", "security": sec, "parameters": [rid],
        "responses": {**resp(200, ref("Request")), **errs(400, 404)}}},
    "/requests/{id}/approve": write("Approve (an approver of the channel)", {"actor": actor}, [], ref("Request"), path_id=True),
    "/requests/{id}/deny": write("Deny (an approver)", {"actor": actor, "reason": S}, [], ref("Request"), path_id=True),
    "/requests/{id}/revoke": write("End access early (approver, admin, or the requester)", {"actor": actor, "reason": S}, [], ref("Request"), path_id=True),
    "/requests/{id}/cancel": write("Withdraw a pending request (requester or approver)", {"actor": actor}, [], ref("Request"), path_id=True),
    "/requests/{id}/review": write("Record the review of a break-glass grant (an approver)", {"actor": actor, "note": S}, [], ref("Request"), path_id=True),
    "/requests/{id}/extend": write("Lengthen a grant (an approver; the requester only with self-approval), within the policy's maximum",
        {"actor": actor, "minutes": I}, ["minutes"], ref("Request"), path_id=True),
    "/grants/overdue": {"get": {"summary": "Grants past their end (or revoked) whose removal has not succeeded yet", "security": sec,
        "responses": {**resp(200, {"type": "object", "required": ["overdue", "count"]}), **errs()}}},
    "/callbacks": {"get": {"summary": "Callback events by delivery status (dead letters by default)", "security": sec,
        "parameters": [q("status", "PENDING, DELIVERED or DEAD (default)"), q("limit", "1-1000", I)],
        "responses": {**resp(200, {"type": "object", "required": ["callbacks", "count"]}), **errs(400)}}},
    "/callbacks/{event_id}/resend": {"post": {"summary": "Queue a dead callback again", "security": sec,
        "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": S}],
        "responses": {**resp(200, {"type": "object", "required": ["event_id", "status"]}), **errs(400, 404)}}},
    "/admin/keys/usage": {
        "get": {"summary": "When each key last verified a request, per ring and verifier", "security": sec,
                "responses": {**resp(200, {"type": "object", "required": ["usage", "count"]}), **errs()}},
        "post": {"summary": "A verifier elsewhere (the bridge) reports its key use", "security": sec,
                 "requestBody": body({"ring": {"enum": ["backend", "callback"]}, "verifier": S,
                     "keys": {"type": "array", "items": {"type": "object", "required": ["key_id", "last_used_unix"]}}},
                     ["ring", "verifier", "keys"]),
                 "responses": {**resp(200, {"type": "object", "required": ["recorded"]}), **errs(400, 415)}}},
    "/requests/{id}/post": write("Record the approval card's Mattermost post id", {"post_id": S}, ["post_id"], ref("Request"), path_id=True, extra=(400, 404, 409, 415)),
    "/config/bind": write("Bind an account (and permission sets) to a channel (admin)", {"actor": actor, "channel_id": S, "account_id": S,
        "permission_set_arn": S, "permission_set_arns": {"type": "array", "items": S}}, ["channel_id", "account_id"], ref("Binding")),
    "/config/unbind": write("Unbind an account from a channel (admin)", {"actor": actor, "channel_id": S, "account_id": S}, ["channel_id", "account_id"], ref("Binding")),
    "/config/approvers": write("Set a channel's approvers and N (admin)", {"actor": actor, "channel_id": S,
        "approvers": {"type": "array", "items": S}, "required_approvals": I}, ["channel_id", "approvers"], ref("Binding")),
    "/config/policy": write("Change a channel's policy (admin)", {"actor": actor, "channel_id": S, "required_approvals": I,
        "allow_self_approval": B, "max_request_hours": I, "pending_timeout_minutes": I, "require_ticket": B,
        "break_glass_enabled": B, "break_glass_max_minutes": I}, ["channel_id"], ref("Binding")),
    "/config/accounts": {"get": {"summary": "A channel's bound accounts and policy", "security": sec,
        "parameters": [{**q("channel_id", ""), "required": True}], "responses": {**resp(200, ref("Binding")), **errs(400)}}},
    "/audit": {"get": {"summary": "Audit events in sequence order", "security": sec, "parameters": [
        q("request_id", ""), q("account_id", ""), q("channel_id", ""), q("actor", "user id or email"), q("type", "e.g. request.approved"),
        q("since", "RFC 3339 or YYYY-MM-DD"), q("until", "RFC 3339 or YYYY-MM-DD"), q("limit", "1-1000, default 500", I), q("next_token", ""),
        q("format", "json (default), jsonl (application/x-ndjson) or csv (text/csv); for jsonl and csv the next page's token is in the X-Next-Token header")],
        "responses": {**resp(200, {"type": "object", "required": ["events", "count", "next_token"],
            "properties": {"events": {"type": "array", "items": ref("AuditEvent")}, "count": I, "next_token": NS}}), **errs(400)}}},
    "/audit/verify": {"get": {"summary": "Walk the audit hash chain", "security": sec,
        "responses": {**resp(200, {"type": "object", "required": ["ok", "events"]}), **errs(409)}}},
}

doc = {"openapi": "3.1.0",
       "info": {"title": "jit-access backend API", "version": "1",
                "description": "Every route but /healthz and /readyz needs an X-JIT signature (docs/protocol.md). Bodies are JSON, at most 64 KiB."},
       "paths": paths,
       "components": {"schemas": {"Request": request_view, "Binding": binding_view, "AuditEvent": audit_view, "Error": error, "AuthError": auth_error},
                      "securitySchemes": {"xjit": {"type": "apiKey", "in": "header", "name": "X-JIT-Signature",
                          "description": "With X-JIT-KeyID, X-JIT-Timestamp, X-JIT-Nonce and optionally X-JIT-Signature-Version: 2."}}}}
print(json.dumps(doc, indent=2))
