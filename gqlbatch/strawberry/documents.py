"""Parse and validate a query text once: :class:`DocumentCache`, a Strawberry extension.

A server answers the same few query texts over and over, and Strawberry parses
and validates each one again on every request: graphql-core's 32 validation
rules walk the whole document each time (about a tenth of a small request's
time in the example API). :class:`DocumentCache` keeps, by query text:

- the parsed document (keyed by the text *and* the parse options, so a token
  limit such as Strawberry's ``MaxTokensLimiter`` applies exactly as without
  the cache: a text parsed under a larger limit is parsed again under a
  smaller one);
- the fact that the document passed graphql-core's *standard* rules
  (``specified_rules``, and the two Strawberry adds) for that schema. Only a
  clean result is kept; a document with errors is validated again every time.

What it never skips:

- **Any other validation rule.** Rules an extension adds (Strawberry's
  ``QueryDepthLimiter`` and ``MaxAliasesLimiter``, your own) run on every
  request, on the cached document.
- **Any check made by another extension's** ``on_validate`` (the depth, alias,
  repeat and cost limits of :mod:`gqlbatch.strawberry`, which read the
  request's variables). A hit marks the operation as validated (an empty error
  list) when no check before it refused the operation; a check placed after it
  still runs, since it runs whenever no error was recorded, and its refusal
  stands. A check placed before it that refused is seen, and the cache then
  does nothing. Either order is exact.

Both maps are bounded LRU (``maxsize`` entries each), and a text longer than
``max_query_length`` is never kept, so unique texts sent by a client can evict
entries but never grow memory past the bound. One cache serves every request:
create it once and give the schema its factory::

    documents = DocumentCache(maxsize=256)
    schema = strawberry.Schema(Query, extensions=[documents.extension(), LoaderExtension])
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from graphql import ASTValidationRule, DocumentNode, specified_rules, validate
from strawberry.extensions import SchemaExtension

__all__ = ["DocumentCache"]

_STANDARD: frozenset[type[ASTValidationRule]] = frozenset(specified_rules)
"""graphql-core's own rules: a clean result under them depends on the schema and text only."""


def _positive(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return value


class DocumentCache:
    """Parsed documents and clean validations by query text, shared by every request.

    Args:
        maxsize: documents kept (and as many clean validations), least
            recently used evicted first. Default 256.
        max_query_length: longer query texts are parsed and validated as
            usual and never kept. Default 20,000 characters.
    """

    __slots__ = ("_documents", "_max_length", "_maxsize", "_valid")

    def __init__(self, *, maxsize: int = 256, max_query_length: int = 20_000) -> None:
        self._maxsize = _positive("maxsize", maxsize)
        self._max_length = _positive("max_query_length", max_query_length)
        self._documents: OrderedDict[Hashable, DocumentNode] = OrderedDict()
        self._valid: OrderedDict[Hashable, None] = OrderedDict()

    @property
    def maxsize(self) -> int:
        """Documents kept at most (and clean validations at most)."""
        return self._maxsize

    def __len__(self) -> int:
        """Documents kept now."""
        return len(self._documents)

    def clear(self) -> None:
        """Forget every document and validation (after changing the schema, say)."""
        self._documents.clear()
        self._valid.clear()

    def extension(self) -> Callable[..., SchemaExtension]:
        """The factory to put in ``strawberry.Schema(extensions=[...])``."""
        return functools.partial(_DocumentCacheExtension, cache=self)

    def __repr__(self) -> str:
        return f"<DocumentCache {len(self._documents)}/{self._maxsize} documents>"

    # -- used by the extension

    def _remember(self, store: OrderedDict[Hashable, Any], key: Hashable, value: Any) -> None:
        store[key] = value
        if len(store) > self._maxsize:
            store.popitem(last=False)


class _DocumentCacheExtension(SchemaExtension):
    """One operation's use of a :class:`DocumentCache` (Strawberry makes one per operation)."""

    def __init__(self, *, cache: DocumentCache) -> None:
        self.cache = cache
        self._parsed: DocumentNode | None = None  # the document this text parsed to

    def _text(self) -> str | None:
        query = self.execution_context.query
        if isinstance(query, str) and len(query) <= self.cache._max_length:
            return query
        return None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        text = self._text()
        key: Hashable | None = None
        if text is not None and context.graphql_document is None:
            # The options (max_tokens) are part of the key, as in Strawberry's ParserCache.
            key = (text, tuple(sorted(context.parse_options.items())))
        if key is not None:
            documents = self.cache._documents
            found = documents.get(key)
            if found is not None:
                documents.move_to_end(key)
                context.graphql_document = self._parsed = found
                yield
                return
        yield
        parsed = context.graphql_document
        if key is not None and parsed is not None and not context.pre_execution_errors:
            self._parsed = parsed
            self.cache._remember(self.cache._documents, key, parsed)

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        text = self._text()
        document = context.graphql_document
        rules = context.validation_rules
        key: Hashable | None = None
        if (
            text is not None
            and document is not None
            and document is self._parsed  # not one another extension put in its place
            and rules
            and context.pre_execution_errors is None  # no check before this one refused
        ):
            standard = tuple(rule for rule in rules if rule in _STANDARD)
            others = tuple(rule for rule in rules if rule not in _STANDARD)
            schema = context.schema._schema
            key = (schema, text, standard)
            valid = self.cache._valid
            if key in valid:
                valid.move_to_end(key)
                # Standard rules passed on this text before; every other rule runs now.
                context.pre_execution_errors = validate(schema, document, others) if others else []
                yield
                return
        yield
        if key is not None and context.pre_execution_errors == []:  # validated, clean
            self.cache._remember(self.cache._valid, key, None)
