"""The CLI's one-line error messages keep what the protocol message says is wrong."""

from __future__ import annotations

import json

from cli.errors import essential

FOOTER = "\n\n---\n\n* method:     createTask\n* errorCode:  X\n* statusCode: 400\n* time:       t"


def test_a_schema_error_names_the_fields() -> None:
    message = (
        "Schema Validation Failed!\nRejecting Schema: TaskDefinitionRequest\nErrors:\n"
        "deadline: is required\nmetadata.source: must match ^https?://" + FOOTER
    )
    assert essential(message) == (
        "Schema Validation Failed! deadline: is required; metadata.source: must match ^https?://"
    )


def test_a_scope_error_lists_the_missing_scopes() -> None:
    missing = ["queue:create-task:project:x/a", "queue:scheduler-id:-"]
    required = {"AllOf": [*missing, "queue:route:*"]}
    message = (
        "Client ID c does not have sufficient scopes and is missing the following scopes:\n\n"
        f"```\n{json.dumps(missing, indent=2)}\n```\n\n"
        "This request requires the client to satisfy the following scope expression:\n\n"
        f"```\n{json.dumps(required, indent=2)}\n```" + FOOTER
    )
    assert essential(message) == (
        "Client ID c does not have sufficient scopes and is missing the following scopes: "
        "queue:create-task:project:x/a, queue:scheduler-id:-"
    )


def test_an_expression_of_missing_scopes_stays_whole_and_plain_text_passes() -> None:
    missing = {"AnyOf": ["a:b", "c:d"]}
    message = f"missing the following scopes:\n\n```\n{json.dumps(missing, indent=2)}\n```"
    assert essential(message) == 'missing the following scopes: {"AnyOf":["a:b","c:d"]}'
    assert essential("Task `abc` not found" + FOOTER) == "Task `abc` not found"
