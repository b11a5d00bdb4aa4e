"Our SentencePiece BPE tokenizer against the sentencepiece library on models trained here, and against broken files."
import inspect
import json
import random
import struct
import pytest
import sentencepiece as spm
import pydoc_data.topics

from minillama.core import MiniLlamaError
from minillama.tokenizer import Tokenizer, read_fields


def corpus_lines():
    return [l for t in pydoc_data.topics.topics.values() for l in t.splitlines()]


def held_out_lines(n_random=1500, seed=0):
    "Thousands of lines: code, prose, whitespace runs, accents, CJK, emoji, characters absent from any vocabulary."
    rnd = random.Random(seed)
    code = (inspect.getsource(json) + inspect.getsource(random)).splitlines()
    prose = corpus_lines()[-1500:]
    alphabet = ("abcdefghij ABC  \t\n0123456789 .,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`" + "éèêëàâäôöûüçñß" + "ÆØÅæøå" +
                "中文数字日本語한국어" + "ひらがなカタカナ" + "🙂🚀✓★∑√πΩ" + "\u2581\u00a0\u200b" + "𝔘𝔫𝔦𝔠𝔬𝔡𝔢" + "\U0001f9ea")
    rand = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 60))) for _ in range(n_random)]
    edge = ["", " ", "  ", "\t", "\n", "\n\n", " leading", "trailing ", "a  b   c", "▁", "▁▁x", "<s>", "</s>", "<unk>",
            "<0x41>", "12345678901234567890", "x" * 500, " " * 40, "\x00\x01\x7f", "tool<tool>tool<tool><tool>"]
    return code + prose + rand + edge


SETTINGS = {
    "llama-like-1000": dict(vocab_size=1000),
    "llama-like-3000": dict(vocab_size=3000),
    "small-400": dict(vocab_size=400),
    "remove-extra-ws": dict(vocab_size=1000, remove_extra_whitespaces=True),
    "user-symbols": dict(vocab_size=1000, user_defined_symbols=["<tool>", "tool", "▁def"]),
    "no-byte-fallback": dict(vocab_size=1000, byte_fallback=False, character_coverage=0.98),
    "no-dummy-prefix": dict(vocab_size=1000, add_dummy_prefix=False),
    "whitespace-pieces": dict(vocab_size=1000, split_by_whitespace=False),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("spm")
    (d / "corpus.txt").write_text("\n".join(corpus_lines()[:-1500]))
    out = {}
    for name, kw in SETTINGS.items():
        opts = dict(model_type="bpe", byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
                    split_digits=True, allow_whitespace_only_pieces=True, character_coverage=1.0, minloglevel=2)
        opts.update(kw)
        spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / name), **opts)
        out[name] = d / f"{name}.model"
    return out


@pytest.mark.parametrize("name", SETTINGS)
def test_encode_decode_match_library(models, name):
    ref = spm.SentencePieceProcessor(model_file=str(models[name]))
    tok = Tokenizer.from_file(models[name])
    assert tok.vocab_size == ref.get_piece_size()
    lines = held_out_lines()
    bad = [(l, tok.encode(l), ref.encode(l)) for l in lines if tok.encode(l) != ref.encode(l)]
    print(f"{name}: {len(lines)} lines, {len(bad)} differ")
    assert not bad, bad[:3]
    for l in lines:
        ids = ref.encode(l)
        assert tok.decode(ids) == ref.decode(ids), (l, ids)
    # bos/eos
    assert tok.encode("hi", bos=True, eos=True) == [ref.bos_id()] + ref.encode("hi") + [ref.eos_id()]


@pytest.mark.parametrize("name", ["llama-like-1000", "no-byte-fallback", "user-symbols"])
def test_decode_random_ids_matches_library(models, name):
    "Arbitrary id sequences (broken UTF-8 byte runs, control and unknown pieces) decode as the library decodes them."
    ref = spm.SentencePieceProcessor(model_file=str(models[name]))
    tok = Tokenizer.from_file(models[name])
    rnd = random.Random(1)
    for _ in range(2000):
        ids = [rnd.randrange(tok.vocab_size) if rnd.random() < 0.5 else rnd.randrange(min(300, tok.vocab_size))
               for _ in range(rnd.randint(0, 12))]
        assert tok.decode(ids) == ref.decode(ids), ids


def test_whole_string_path_equals_word_path(models):
    "The word-by-word fast path and the whole-string merge give the same ids."
    tok = Tokenizer.from_file(models["llama-like-1000"])
    assert tok.word_safe
    slow = Tokenizer.from_file(models["llama-like-1000"]); slow.word_safe = False
    for l in held_out_lines(300, seed=3):
        assert tok.encode(l) == slow.encode(l)


def _model_bytes(models):
    return models["small-400"].read_bytes()


def test_truncated_model_files(models, tmp_path):
    raw = _model_bytes(models)
    p = tmp_path / "t.model"
    outcomes = 0
    for cut in list(range(0, 200)) + list(range(len(raw) - 300, len(raw), 7)):
        p.write_bytes(raw[:cut])
        try:
            Tokenizer.from_file(p)
        except MiniLlamaError as e:
            assert str(p) in str(e) and "\n" not in str(e)
            outcomes += 1
    assert outcomes > 150


def test_random_corruption_only_our_error(models, tmp_path):
    raw = _model_bytes(models)
    p, rnd = tmp_path / "c.model", random.Random(2)
    for _ in range(1500):
        b = bytearray(raw)
        for _ in range(rnd.randint(1, 5)): b[rnd.randrange(len(b))] = rnd.randrange(256)
        p.write_bytes(bytes(b))
        try:
            Tokenizer.from_file(p).encode("hello wörld 🙂")
        except MiniLlamaError as e:
            assert "\n" not in str(e)


def _piece(text, score, typ):
    t = text.encode()
    body = b"\x0a" + bytes([len(t)]) + t + b"\x15" + struct.pack("<f", score) + b"\x18" + bytes([typ])
    return b"\x0a" + bytes([len(body)]) + body


def test_unknown_piece_type(tmp_path):
    p = tmp_path / "u.model"
    p.write_bytes(_piece("<unk>", 0, 2) + _piece("a", 0, 9))
    with pytest.raises(MiniLlamaError, match="unknown type 9"):
        Tokenizer.from_file(p)


def test_not_bpe_and_missing(tmp_path, models):
    with pytest.raises(MiniLlamaError, match="no such file"):
        Tokenizer.from_file(tmp_path / "nope.model")
    spm.SentencePieceTrainer.train(input=str(models["small-400"].parent / "corpus.txt"), model_prefix=str(tmp_path / "uni"),
                                   model_type="unigram", vocab_size=400, minloglevel=2)
    with pytest.raises(MiniLlamaError, match="not BPE"):
        Tokenizer.from_file(tmp_path / "uni.model")


def test_decode_out_of_vocab(models):
    tok = Tokenizer.from_file(models["small-400"])
    with pytest.raises(MiniLlamaError, match="outside the vocabulary"):
        tok.decode([1, 400])
    with pytest.raises(MiniLlamaError, match="outside the vocabulary"):
        tok.decode([-1])


def test_wire_reader_rejects_garbage():
    from minillama.tokenizer import WireError
    for b in [b"\x0a\xff", b"\x0a\x05ab", b"\x0b", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"]:
        with pytest.raises(WireError):
            list(read_fields(b))
