"""Request and response bodies of the search server, as pydantic models.

FastAPI validates request bodies against these models and builds the OpenAPI schema from them, so what the
models say is what the server accepts. Rules that do not depend on the server's options live here (types, no
unknown fields, non-blank queries, ``k >= 1``, exactly one of ``query`` / ``queries``); the limits set by
:class:`~densekit.serving.config.ServerConfig` (``max_k``, ``max_queries``, ``max_query_chars``) are checked
by :func:`densekit.serving.validation.search_limits`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# what "\S" excludes in the schema's (ECMAScript) regex; Python's str.isspace() also counts \x1c-\x1f and \x85
ECMA_SPACE = frozenset("\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff"
                       + "".join(map(chr, range(0x2000, 0x200B))))


def _not_blank(text: str) -> str:
    if all(c in ECMA_SPACE for c in text):
        raise PydanticCustomError("blank_query", "String should contain some text, not only whitespace")
    return text


def _integral(value: Any) -> Any:
    """31.0 is an integer to JSON Schema (and so to clients generating from it); 2.5 stays a float and is refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_integral)]

# "pattern" documents the rule in the OpenAPI schema; _not_blank enforces it with a clearer message
QueryText = Annotated[str, Field(min_length=1, json_schema_extra={"pattern": r"\S"}), AfterValidator(_not_blank)]


class SearchRequest(BaseModel):
    """One query (``query``) or many (``queries``), ``k`` hits each; ``return_text`` adds document text."""

    # exactly one of the two, in the OpenAPI schema too (schemathesis generates from it); an explicit null is
    # refused like any other non-string (the fields are typed str / list, None only as "not given")
    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"oneOf": [{"required": ["query"]}, {"required": ["queries"]}]})

    query: QueryText = Field(None, description="one query; at most the server's --max-query-chars "
                                               "(2048 by default). Give this or 'queries'.")
    queries: list[QueryText] = Field(None, min_length=1,
                                     description="several queries searched together; at most the "
                                                 "server's --max-queries (64 by default). Give this or 'query'.")
    k: WholeNumber = Field(10, ge=1, description="hits per query; at most the server's --max-k (100 by default)")
    return_text: bool = Field(False, description="add each hit's document text (title + text)")

    @model_validator(mode="after")
    def _one_of_query_or_queries(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise PydanticCustomError("query_or_queries", "give exactly one of 'query' (a string) or 'queries' "
                                                          "(a list of strings)")
        return self

    @property
    def texts(self) -> list[str]:
        """The queries of this request, in order."""
        return [self.query] if self.query is not None else list(self.queries or [])

    def located_texts(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Each query with its place in the body: ``("query",)`` or ``("queries", i)``."""
        if self.query is not None:
            return [(("query",), self.query)]
        return [(("queries", i), text) for i, text in enumerate(self.queries or [])]


class Hit(BaseModel):
    doc_id: str = Field(description="the document's id in the indexed corpus")
    score: float = Field(description="inner product of query and document vectors (cosine for unit vectors)")
    text: str | None = Field(None, description="document text; only with return_text")


class QueryResult(BaseModel):
    query: str
    hits: list[Hit]


class SearchResponse(BaseModel):
    results: list[QueryResult] = Field(description="one entry per query, in request order")
    index_version: int = Field(description="which index answered: 1 at start, +1 per swap")
    took_ms: float


class SwapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    index: str = Field(description="index folder written by densekit index, on the server's disk")
    corpus: str | None = Field(None, description="BEIR folder or corpus.jsonl(.gz) for return_text "
                                                 "(default: reuse the current text, or the corpus the index "
                                                 "records)")


class IndexInfo(BaseModel):
    folder: str | None
    version: int
    count: int
    index_type: str | None
    search_params: dict[str, Any]
    model: str | None
    loaded_at: float
    has_text: bool


class HealthResponse(BaseModel):
    status: str
    index: IndexInfo
    model_dim: int


class SwapResponse(BaseModel):
    status: str
    index: IndexInfo


class ErrorBody(BaseModel):
    """Every refusal: what is wrong, in one sentence (``field '<name>': ...`` for a bad field)."""

    detail: str
