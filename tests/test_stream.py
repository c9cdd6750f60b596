"""The stream's pure parts: loop detection, partial parsing, the writer's location."""

from __future__ import annotations

import random
import string
import time

from engine.core.events import Finished, GenerationStats, InvalidAnswer, Looping
from engine.generate.stream import (
    LoopPolicy,
    ProposalStream,
    describe_unit,
    json_location,
    partial_parse,
    repeated_tail,
)

HEAD = '{"branch_suffix": "x", "commit_message": "feat: x", "pr_title": "feat: x", '
FUNC = (
    "\n\ndef get_item(item_id: int, db: Session = Depends(get_db)) -> ItemOut:\n"
    '    """Return one item."""\n'
    "    item = db.get(Item, item_id)\n"
    "    if item is None:\n"
    '        raise HTTPException(status_code=404, detail="not found")\n'
    "    return item\n"
)


def test_short_units_repeated_many_times_are_loops() -> None:
    assert repeated_tail("x = 1\n" + "health_api/" * 20) == ("health_api/", 20)
    assert repeated_tail("start " + "ab" * 150) is None  # two characters need 400
    assert repeated_tail("start " + "=" * 500) is not None
    assert repeated_tail("ok: " + "health_api/" * 5) is None  # five copies are not yet a loop


def test_a_long_block_written_again_and_again_is_a_loop() -> None:
    assert len(FUNC) > LoopPolicy().max_period
    found = repeated_tail("import x\n" + FUNC * 4)
    assert found == (FUNC, 4)
    assert repeated_tail("import x\n" + FUNC * 3) is None  # three copies may be deliberate
    # a whole file entry of the JSON answer, repeated
    entry = '{"path": "app/a.py", "content": "' + FUNC.replace("\n", "\\n") + '"}, '
    found = repeated_tail(HEAD + '"files": [' + entry * 5)
    assert found is not None and found[1] >= 4 and len(found[0]) == len(entry)
    # the longest period the policy allows, and one past it
    policy = LoopPolicy(max_long_period=300, window=4096)
    block = "".join(random.Random(1).choices(string.ascii_letters + " \n", k=300))
    assert repeated_tail("x" + block * 4, policy) == (block, 4)
    longer = block + "y"
    assert repeated_tail("x" + longer * 4, policy) is None


def test_similar_but_different_blocks_are_not_loops() -> None:
    text = "".join(FUNC.replace("get_item", f"get_item_{i}") for i in range(12))
    assert repeated_tail(text) is None
    rows = "".join(f'    {{"id": {i}, "name": "item {i}", "price": 9.99}},\n' for i in range(80))
    assert repeated_tail(rows) is None


def test_loop_check_stays_cheap_on_text_without_repetition() -> None:
    rng = random.Random(7)
    text = "".join(rng.choices(string.ascii_lowercase + " \n", k=8000))
    repeated_tail(text)  # warm
    t0 = time.perf_counter()
    for _ in range(50):
        assert repeated_tail(text) is None
    per_call = (time.perf_counter() - t0) / 50
    assert per_call < 0.02, per_call  # generous: it runs every 16 characters of the answer


def test_the_stream_reports_a_long_loop_with_a_short_message() -> None:
    stream = ProposalStream()
    text = HEAD + '"files": [{"path": "app/a.py", "content": "' + FUNC.replace("\n", "\\n") * 6
    for i in range(0, len(text), 7):
        stream.feed(text[i : i + 7])
        if stream.loop is not None:
            break
    loop = stream.loop
    assert isinstance(loop, Looping)
    assert loop.where == "files[0].content"
    assert "character block starting" in loop.message and len(loop.message) < 200


def test_describe_unit_quotes_short_units_whole() -> None:
    assert describe_unit("ab/") == "'ab/'"
    assert describe_unit("x" * 100).startswith("a 100-character block starting 'xxx")


def test_partial_parse_and_location_follow_the_writer() -> None:
    assert partial_parse("") is None
    assert json_location(partial_parse(HEAD)) == "pr_title"
    partial = partial_parse(HEAD + '"files": [{"path": "a.py", "content": "import o')
    assert partial is not None
    assert json_location(partial) == "files[0].content"
    assert partial["files"][0]["content"] == "import o"


def answer(n_files: int) -> str:
    files = ", ".join(f'{{"path": "app/m{i}.py", "content": "X = {i}\\n"}}' for i in range(n_files))
    return HEAD + f'"pr_body": "Closes #1", "files": [{files}]}}'


def test_the_configured_file_limit_applies_to_the_final_answer() -> None:
    """Above the built-in 12 when configured so; below it, a schema-ignoring server is caught."""
    stats = GenerationStats(backend="openai", model="m")
    big = ProposalStream(max_files=20)
    big.feed(answer(13))
    final = big.finish("stop", stats)
    assert isinstance(final, Finished) and len(final.proposal.files) == 13
    small = ProposalStream(max_files=2)
    small.feed(answer(3))
    final = small.finish("stop", stats)
    assert isinstance(final, InvalidAnswer)
    assert "3 files; the limit is 2" in final.message
    # raw newlines and control characters inside strings (the grammar allows them) parse
    lenient = ProposalStream()
    lenient.feed(answer(1).replace("X = 0\\n", "X = 0\n\tY = 1\n"))
    final = lenient.finish("stop", stats)
    assert isinstance(final, Finished)
    assert final.proposal.files[0].content == "X = 0\n\tY = 1\n"
