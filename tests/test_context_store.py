"""Contexts in LangGraph's store (rlm_graph.contexts) and the context check (sandbox.engine.context)."""

from __future__ import annotations

import pytest
from langgraph.store.memory import InMemoryStore

from rlm_graph.contexts import CHUNK_CHARS, KeptContexts, context_ref, delete_context, get_context, put_context
from sandbox.engine.context import check_context, describe_context


@pytest.mark.parametrize("context", ["", "short", "é" * 10, "x" * (2 * CHUNK_CHARS + 5), [], ["a", "b"], [""]])
def test_a_context_comes_back_as_it_went_in(context):
    store = InMemoryStore()
    ref = put_context(store, context)
    assert get_context(store, ref) == context
    assert ref.startswith("str:sha256:" if isinstance(context, str) else "list:sha256:")


def test_the_reference_is_the_content_hash_so_a_second_put_writes_nothing():
    store = InMemoryStore()
    assert put_context(store, "same") == put_context(store, "same") == context_ref("same")
    assert context_ref("same") != context_ref(["same"]) != context_ref("other")
    assert len(store.search(("rlm", "contexts"), limit=100)) == 2  # one chunk and its meta


def test_a_big_context_is_chunked():
    store = InMemoryStore()
    ref = put_context(store, "y" * (CHUNK_CHARS + 1))
    namespace = ("rlm", "contexts", ref.split(":")[2])
    assert store.get(namespace, "meta").value == {"kind": "str", "chunks": 2, "chars": CHUNK_CHARS + 1}


@pytest.mark.parametrize("ref", ["nope", "str:md5:" + "0" * 64, "str:sha256:" + "0" * 63, "str:sha256:" + "G" * 64,
                                 "dict:sha256:" + "0" * 64])
def test_a_malformed_reference_is_a_key_error(ref):
    with pytest.raises(KeyError, match="not a context reference"):
        get_context(InMemoryStore(), ref)


def test_a_missing_context_is_a_key_error_and_a_damaged_one_a_value_error():
    store = InMemoryStore()
    ref = put_context(store, "x" * (CHUNK_CHARS + 10))
    namespace = ("rlm", "contexts", ref.split(":")[2])
    with pytest.raises(KeyError):
        get_context(store, context_ref("never stored"))
    store.put(namespace, "0", {"text": "tampered"})
    with pytest.raises(ValueError, match="does not match its hash"):
        get_context(store, ref)
    store.delete(namespace, "1")
    with pytest.raises(ValueError, match="only part of context"):
        get_context(store, ref)


def test_delete_removes_it_and_is_idempotent():
    store = InMemoryStore()
    ref = put_context(store, "gone")
    delete_context(store, ref)
    delete_context(store, ref)
    with pytest.raises(KeyError):
        get_context(store, ref)


def test_kept_contexts_deletes_the_least_recently_used_past_its_limit():
    store = InMemoryStore()
    kept = KeptContexts(store, limit=2)
    a, b = kept.put("a"), kept.put("b")
    assert kept.put("a") == a  # a used again: b is now the oldest
    c = kept.put("c")
    assert get_context(store, a) == "a" and get_context(store, c) == "c"
    with pytest.raises(KeyError):
        get_context(store, b)


@pytest.mark.parametrize("value,message", [
    (b"bytes", "got bytes: decode it first"),
    ({"a": "b"}, "got a dict: serialize it first"),
    (["a", 3], r"context\[1\] is a int"),
    (3, "got int"),
    (None, "got NoneType"),
])
def test_check_context_says_what_to_do(value, message):
    with pytest.raises(TypeError, match=message):
        check_context(value)


@pytest.mark.parametrize("context,description", [
    ("", "`context` is a str of 0 characters (0 lines)."),
    ("a\nbb", "`context` is a str of 4 characters (2 lines)."),
    ("x" * 1234, "`context` is a str of 1,234 characters (1 lines)."),
    (["ab", "cdef"], "`context` is a list of 2 str documents, 6 characters in total (shortest 2, longest 4)."),
    ([], "`context` is a list of 0 str documents, 0 characters in total (shortest 0, longest 0)."),
])
def test_describe_context(context, description):
    assert describe_context(context) == description


class _SliceRecorder(str):
    """A str that records the length of every slice taken of it."""

    def __getitem__(self, key):
        if isinstance(key, slice):
            self.taken.append(len(range(*key.indices(len(self)))))
        return str.__getitem__(self, key)


@pytest.mark.parametrize("encode", ["hash", "send"])
def test_a_long_context_is_encoded_in_slices_small_enough_to_reuse_memory(encode):
    # Slices of 256 KiB or more get fresh pages from the kernel each time: encoding 100 MB that
    # way took 160 ms instead of 15, and hashing it 234 ms instead of 88.
    from sandbox.boundary import frames

    plain = "ab\u00e9\n" * (frames.TEXT_SLICE_CHARS // 2)
    text = _SliceRecorder(plain)
    text.taken = []
    if encode == "hash":
        assert context_ref(text) == context_ref(plain)
    else:
        size, parts = frames.text_parts(text)
        assert b"".join(parts) == plain.encode() and size == len(plain.encode())
    assert len(text.taken) > 1 and max(text.taken) == frames.TEXT_SLICE_CHARS <= 1 << 16
