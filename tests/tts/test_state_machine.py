import json

import numpy as np
import pytest
import sentencepiece

from services.tts.script import Entry, ScriptBuilder, prepare_script
from services.tts.state_machine import StateMachineConfig, WordStateMachine
from tests.conftest import FIXTURES

GOLDEN = np.load(FIXTURES / "tts_dev_golden.npz")
META = json.loads(str(GOLDEN["meta"]))
TOKENIZER = sentencepiece.SentencePieceProcessor(
    model_file=str(FIXTURES / "tts_dev_tokenizer.model"))


def golden_config() -> StateMachineConfig:
    machine = META["tts"]["machine"]
    return StateMachineConfig(card=machine["token_ids"]["card"],
                              second_stream_ahead=machine["second_stream_ahead"],
                              max_padding=machine["max_padding"],
                              initial_padding=machine["initial_padding"])


def split_entries(tokens: np.ndarray) -> list[list[int]]:
    entries, current = [], []
    for token in tokens.tolist():
        if token == -1:
            entries.append(current)
            current = []
        else:
            current.append(token)
    return entries


@pytest.mark.parametrize("k", [0, 1])
def test_script_preparation_matches_golden_entries(k):
    script = META["scripts"][f"script{k}"]
    entries = prepare_script([script["text"]], TOKENIZER,
                             padding_between=META["tts"]["padding_between"])
    assert [list(e.tokens) for e in entries] == split_entries(GOLDEN[f"s{k}_entries_tokens"])
    assert [e.padding for e in entries] == GOLDEN[f"s{k}_entries_padding"].tolist()
    assert [e.text for e in entries if e.tokens] == script["words"]


@pytest.mark.parametrize("k", [0, 1])
def test_state_machine_reproduces_golden_run(k):
    script = META["scripts"][f"script{k}"]
    machine = WordStateMachine(golden_config(), prepare_script([script["text"]], TOKENIZER),
                               end_of_input=True)
    fed = [machine.step(int(t)) for t in GOLDEN[f"s{k}_text_predicted"]]
    assert [f.token for f in fed] == GOLDEN[f"s{k}_text_fed"].tolist()
    assert [f.main for f in fed] == GOLDEN[f"s{k}_text_fed_main"].tolist()
    assert [f.second for f in fed] == GOLDEN[f"s{k}_text_fed_second"].tolist()
    assert machine.consumption_times == GOLDEN[f"s{k}_consumption_times"].tolist()
    assert [w.step for w in machine.transcript] == GOLDEN[f"s{k}_transcript_steps"].tolist()
    assert [[w.text, w.step] for w in machine.transcript] == script["transcript"]
    assert machine.end_step == int(GOLDEN[f"s{k}_end_step"]) == script["end_step"]


A = Entry((1, 11, 12), "A", 3)
B = Entry((21,), "B", 1)


def run(cfg: StateMachineConfig, entries: list[Entry], proposed: list[int]):
    machine = WordStateMachine(cfg, entries, end_of_input=True)
    fed = [machine.step(t) for t in proposed]
    return machine, [f.main for f in fed], [f.second for f in fed]


def test_grid_of_the_docstring_example():
    cfg = StateMachineConfig(card=30, second_stream_ahead=1, max_padding=8, initial_padding=2)
    machine, main, second = run(cfg, [A, B], [0, 9, 0, 9, 9, 0, 0, 0, 0, 0])
    assert main == [3, 3, 1, 11, 12, 3, 21, 3, 3, 3]
    assert second == [-1, -1, 0, 21, -1, -1, 0, -1, 0, -1]
    assert machine.end_step == 8
    assert [(w.text, w.step) for w in machine.transcript] == [("A", 2), ("B", 6)]


def test_muxed_id_and_no_lookahead_stream():
    cfg = StateMachineConfig(card=30, second_stream_ahead=1)
    machine = WordStateMachine(cfg, [A, B], end_of_input=True)
    tokens = [machine.step(t).token for t in [3, 3, 0, 3]]
    assert tokens == [3, 3, 1 * 30 + 1, (21 + 1) * 30 + 11]
    plain = StateMachineConfig(card=30, second_stream_ahead=0, initial_padding=0)
    machine, main, second = run(plain, [A, B], [0, 0, 0, 0, 0, 0, 0, 0])
    # Without look-ahead the new-word marker itself is fed, then the word's tokens.
    assert main == [0, 1, 11, 12, 0, 21, 3, 3]
    assert second == [-1] * 8
    assert machine.end_step == 6  # pad fed there, no second stream to carry the marker


def test_max_padding_forces_the_next_word():
    cfg = StateMachineConfig(card=30, max_padding=4, initial_padding=1)
    machine, main, _ = run(cfg, [Entry((5,), "x", 1), Entry((6,), "y", 1)], [3] * 12)
    # Initial padding runs out after 1 step; then each word waits max_padding steps.
    assert machine.consumption_times == [1, 6]
    assert main[:8] == [3, 0, 5, 3, 3, 3, 0, 6]
    assert machine.end_step == 11


def test_break_counts_as_padding_and_is_not_a_word():
    entries = [A, Entry((), "", 3), B]
    cfg = StateMachineConfig(card=30, second_stream_ahead=2, initial_padding=0)
    machine, main, second = run(cfg, entries, [0] * 12)
    # A at 0 (no 2nd non-empty word ahead: no look-ahead), its forced padding until step 3,
    # the break at 4 forces 3 padding steps (4, 5, 6), B at 7.
    assert machine.consumption_times == [0, 4, 7]
    assert [w.step for w in machine.transcript] == [0, 7]
    assert main[:9] == [1, 11, 12, 3, 3, 3, 3, 21, 3]
    assert second[:9] == [0, -1, -1, -1, -1, -1, -1, 0, -1]


def test_lookahead_skips_breaks_and_carries_over():
    w0, w1 = Entry((10,), "w0", 1), Entry((11,), "w1", 1)
    w2, w3 = Entry((12, 22, 32), "w2", 3), Entry((13, 23), "w3", 2)
    cfg = StateMachineConfig(card=50, second_stream_ahead=2, initial_padding=0)
    machine, main, second = run(cfg, [w0, Entry((), "", 1), w1, w2, w3], [0] * 12)
    assert machine.consumption_times == [0, 2, 3, 5, 9]
    # w0 queues w2 (the break is skipped); w1 queues w3 behind w2's leftover 32.
    assert second[:9] == [0, 12, 22, 0, 32, 0, 13, 23, -1]
    assert main[:9] == [10, 3, 3, 11, 3, 12, 22, 32, 3]


def test_needs_text_until_the_lookahead_word_arrives():
    cfg = StateMachineConfig(card=30, second_stream_ahead=2, initial_padding=1)
    machine = WordStateMachine(cfg)
    assert not machine.needs_text  # initial padding is forced whatever the text
    machine.step(3)
    assert machine.needs_text
    machine.add([A, B])
    assert machine.needs_text  # A is here, but not the word two ahead of it
    machine.add([Entry((7,), "C", 1)])
    assert not machine.needs_text
    machine.step(0)
    assert not machine.needs_text  # A's tokens are being fed
    machine.end_input()
    with pytest.raises(ValueError, match="after the end"):
        machine.add([B])


def test_streamed_chunks_give_the_same_entries():
    text = 'Hi (there): it\u2019s <break time="0.5s"/>fine<break time="1s"/> ok.'
    whole = prepare_script([text], TOKENIZER)
    for size in (1, 2, 5):
        builder = ScriptBuilder(TOKENIZER)
        streamed = []
        for i in range(0, len(text), size):
            streamed += builder.push(text[i:i + size])
        streamed += builder.finish()
        assert streamed == whole
    assert [e.text for e in whole] == ["Hi", "there", "it's", "", "fine", "", "ok."]
    assert [e.padding for e in whole if e.is_break] == [6, 12]
    assert whole[0].tokens[0] == 1 and whole[1].tokens[0] != 1


def test_speaker_tokens_alternate_by_turn():
    entries = prepare_script(["a b", "c", "d"], TOKENIZER)
    firsts = [e.tokens[0] for e in entries]
    assert firsts[0] == 1 and firsts[2] == 2 and firsts[3] == 1
    single = prepare_script(["a b"], TOKENIZER, multi_speaker=False, padding_between=0)
    assert [e.tokens for e in single] == [tuple(TOKENIZER.encode("a")),
                                          tuple(TOKENIZER.encode("b"))]
    assert [e.padding for e in single] == [0, 0]
