"""Continuous batching on the real student (``models.batch_decoder``): SmolLM2-135M exported to
Q8_0 and decoded by llama.cpp, several chats in one forward pass per step. A chat alone gets
the one-at-a-time reply; concurrent chats are decoded together and each ends where it should;
more chats than streams wait their turn; a reader that leaves frees its cells; the step loop
stops when nothing is open."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from distillery.task import load_task
from models.batch_decoder import BatchDecoder
from models.generator import GREEDY, Generator, chat
from models.gguf import student_gguf
from models.gguf_export import GGUF_FILE, export
from models.llama_decoder import LlamaDecoder, served_generator
from tests.conftest import DATA, ROOT

pytestmark = pytest.mark.integration
TASK = load_task(ROOT / "tasks" / "reply.yaml")
assert TASK.generate is not None
GEN = TASK.generate
SAID = (
    "The charger stopped working after two days. Very disappointed.",
    "Great screen, battery lasts all day, would buy again!",
    "Arrived late and the box was crushed.",
    "Customer service never answered my emails.",
    "Works as described, nothing more.",
    "The colour is lovely but it runs small.",
    "Best purchase this year, thank you!",
    "It smells of plastic and the zip broke.",
)
CHATS = [chat(GEN.system_prompt, GEN.prompt(m)) for m in SAID]


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("student")
    base = student_gguf(DATA)
    Generator.from_gguf(base).save(folder)
    export(Generator.load(folder).model, base, folder / GGUF_FILE)
    return folder


def _batched(
    version: Path, streams: int, widths: list[int] | None = None
) -> tuple[Generator, BatchDecoder]:
    on_step = (widths if widths is not None else []).append  # what the replica's metric sees
    generator = served_generator(version, "llama.cpp", 1, DATA, streams, on_step)
    assert isinstance(generator.decoder, BatchDecoder)
    return generator, generator.decoder


def _settled(decoder: BatchDecoder) -> bool:
    deadline = time.monotonic() + 10
    while not decoder.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    return decoder.idle()


def test_a_chat_alone_gets_the_reply_decoding_one_at_a_time_gives(version: Path) -> None:
    alone = served_generator(version, "llama.cpp", 1, DATA, 1)
    assert isinstance(alone.decoder, LlamaDecoder)
    batched, decoder = _batched(version, 4)
    want, got = alone.reply(CHATS[0], 32), batched.reply(CHATS[0], 32)
    assert got.text == want.text and got.completion_tokens == want.completion_tokens
    assert "".join(p.text for p in batched.stream(CHATS[1], 16)) == batched.reply(CHATS[1], 16).text
    stop = want.text[6:10]
    cut = batched.reply(CHATS[0], 32, [stop])
    assert cut.text == want.text[: want.text.find(stop)] and cut.finish_reason == "stop"
    assert _settled(decoder) and decoder.cells(decoder.streams) > 0  # the last prompt, kept
    assert all(decoder.cells(s) == 0 for s in range(decoder.streams))


def test_concurrent_chats_share_each_step_and_each_ends_where_it_should(version: Path) -> None:
    widths: list[int] = []
    generator, decoder = _batched(version, 8, widths)
    bounds = [4, 8, 12, 16, 20, 24, 28, 32]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda c: generator.reply(*c), zip(CHATS, bounds, strict=True)))
    for reply, most in zip(replies, bounds, strict=True):
        assert 0 < reply.completion_tokens <= most and reply.text
        assert reply.finish_reason == ("length" if reply.completion_tokens == most else "stop")
    assert decoder.decided / decoder.steps > 2, (decoder.decided, decoder.steps)  # batched
    assert len(widths) == decoder.steps and max(widths) > 4 and sum(widths) == decoder.decided
    assert _settled(decoder)
    assert all(decoder.cells(s) == 0 for s in range(decoder.streams))  # every reply's freed


def test_more_chats_than_streams_wait_their_turn(version: Path) -> None:
    generator, decoder = _batched(version, 2)
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda c: generator.reply(c, 12), CHATS))
    assert all(0 < r.completion_tokens <= 12 for r in replies)
    assert decoder.decided / decoder.steps <= 2
    assert _settled(decoder)


def test_a_reader_that_leaves_frees_its_cells_and_the_loop_stops(version: Path) -> None:
    generator, decoder = _batched(version, 4)
    tokens = decoder.tokens(generator.chat_ids(CHATS[2]), GREEDY, set(), 200)
    taken = [next(tokens) for _ in range(3)]  # no end ids: it would run to 200
    assert len(taken) == 3 and not decoder.idle()
    tokens.close()
    assert _settled(decoder)
    assert all(decoder.cells(s) == 0 for s in range(decoder.streams))
    assert decoder.decided < 50  # it stopped soon after the reader left


def test_a_chat_over_the_context_is_refused_naming_the_counts(version: Path) -> None:
    _, decoder = _batched(version, 2)
    with pytest.raises(ValueError, match=f"over the context of {decoder.context}"):
        next(decoder.tokens([1] * decoder.context, GREEDY, set(), 8))
    assert _settled(decoder)


def test_a_chat_that_fits_only_without_the_kept_prefix_is_not_left_waiting(version: Path) -> None:
    """The last prompt's cells are kept for the next chat; one that needs them for itself gets
    them once nothing else is open, instead of waiting for room that never comes."""
    decoder = BatchDecoder(version / GGUF_FILE, 1, 2, context=256)
    first = decoder.tokens([1, *range(300, 399)], GREEDY, set(), 4)  # 100 prompt tokens
    assert len(list(first)) == 4 and _settled(decoder) and decoder.cells(2) == 100
    with ThreadPoolExecutor(1) as pool:
        big = pool.submit(lambda: list(decoder.tokens([1, *range(500, 649)], GREEDY, set(), 100)))
        assert len(big.result(timeout=60)) == 100  # 150 + 100 cells: only without the prefix
    assert _settled(decoder) and decoder.cells(2) == 150  # its prompt is the prefix now
