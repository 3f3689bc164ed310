"""Example file source: Ocean's `graphql` file type, which the engine does not serve out of the box.

A dataset published as `{"type": "graphql", "url": "https://…/graphql", "query": "query { … }"}` is the
answer to that query: the configure pod POSTs `{"query": …, "variables": <the consumer's userdata>}` to
the URL and stores the response body as the input file. Enable it with
`C2D_EXTENSIONS=graphql_source` and `C2D_EXTENSIONS_PATH=<this folder>` (docs/extending.md).

Everything but building the request is the engine's: the URL guard (on the URL and every redirect),
streaming to the job volume with sha256, the deadline, the size cap and the retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from c2d_core.fetch import (
    FetchError,
    FileSource,
    SourceRequest,
    SourceSettings,
    default_headers,
    file_field,
    register_file_source,
)
from c2d_core.workflow import FileObject

# A query is part of the asset's (encrypted) file object; this bounds what one may carry.
MAX_QUERY_CHARS = 64 * 1024


@register_file_source
class GraphqlSource(FileSource):
    type = "graphql"
    fields = ("query",)  # besides url and headers, which every file object may carry

    def request(
        self, file_object: FileObject, userdata: Mapping[str, Any] | None, sources: SourceSettings
    ) -> SourceRequest:
        # Messages name the field that is wrong, never its value: the URL and query are the
        # publisher's secret.
        if not file_object.url:
            raise FetchError("a file of type 'graphql' needs a 'url'")
        query = file_field(file_object, "query")
        if not isinstance(query, str) or not query.strip():
            raise FetchError("a file of type 'graphql' needs a 'query'")
        if len(query) > MAX_QUERY_CHARS:
            raise FetchError(f"the 'query' of a graphql file is longer than {MAX_QUERY_CHARS} characters")
        body: dict[str, Any] = {"query": query}
        if userdata:
            body["variables"] = dict(userdata)
        # httpx sends the body as JSON with its content type; a file object's headers (an API key) stay.
        return SourceRequest("POST", httpx.URL(file_object.url), default_headers(file_object), json_body=body)
