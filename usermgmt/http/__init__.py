"""The HTTP contract both web adapters serve, without any web framework.

``usermgmt_fastapi`` and ``usermgmt_flask`` are thin translations of this package to
their framework, so that a rule both must apply the same way is written once:

* :mod:`~usermgmt.http.problems`: THE table (core error → status) and the RFC 9457
  problem documents of every error, 422 validation errors included;
* :mod:`~usermgmt.http.guards`: what every request goes through first (request id,
  security headers, global rate limit, announced body size, bearer token);
* :mod:`~usermgmt.http.inputs`: request bodies and query strings, decoded and validated;
* :mod:`~usermgmt.http.envelopes`: list and 202 response bodies.

Importing it imports no web framework.
"""

from usermgmt.http.envelopes import (
    REGISTERED,
    RESET_REQUESTED,
    VERIFICATION_SENT,
    AcceptedOut,
    ItemsOut,
    items,
    page,
)
from usermgmt.http.guards import (
    DEFAULT_MAX_BODY_BYTES,
    HSTS,
    REQUEST_ID_HEADER,
    SECURITY_HEADERS,
    RateVerdict,
    bearer_token_from,
    check_content_length,
    check_global_rate,
    count_global_rate,
    exemption,
    global_rate_verdict,
    is_exempt,
    log_access,
    rate_limit_headers_raw,
    request_id_from,
)
from usermgmt.http.inputs import (
    NO_BODY,
    AuditLogQuery,
    PageQuery,
    PlatformAuditLogQuery,
    UserListQuery,
    decode_json_body,
    parse_body,
    parse_query,
)
from usermgmt.http.problems import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPE_BASE,
    STATUS_BY_ERROR,
    Problem,
    ProblemReply,
    body_too_large,
    code_for_status,
    error_problem,
    http_problem,
    internal_error_problem,
    invalid_json,
    json_bytes,
    problem,
    rate_limit_headers,
    status_for,
    to_validation_error,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "HSTS",
    "NO_BODY",
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPE_BASE",
    "REGISTERED",
    "REQUEST_ID_HEADER",
    "RESET_REQUESTED",
    "SECURITY_HEADERS",
    "STATUS_BY_ERROR",
    "VERIFICATION_SENT",
    "AcceptedOut",
    "AuditLogQuery",
    "ItemsOut",
    "PageQuery",
    "PlatformAuditLogQuery",
    "Problem",
    "ProblemReply",
    "RateVerdict",
    "UserListQuery",
    "bearer_token_from",
    "body_too_large",
    "check_content_length",
    "check_global_rate",
    "code_for_status",
    "count_global_rate",
    "decode_json_body",
    "error_problem",
    "exemption",
    "global_rate_verdict",
    "http_problem",
    "internal_error_problem",
    "invalid_json",
    "is_exempt",
    "items",
    "json_bytes",
    "log_access",
    "page",
    "parse_body",
    "parse_query",
    "problem",
    "rate_limit_headers",
    "rate_limit_headers_raw",
    "request_id_from",
    "status_for",
    "to_validation_error",
]
