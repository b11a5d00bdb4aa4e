"Byte-level BPE against Hugging Face's tokenizers; chat templates against transformers; minillama chat end to end."
import json
import subprocess
import sys

import numpy as np
import pydoc_data.topics
import pytest

import minillama
from minillama.bpe import PRE_TOKENIZERS, BPETokenizer, train_bpe, bpe_gguf_metadata
from minillama.chat import Chat, render_chat, end_of_turn_ids
from minillama.core import MiniLlamaError, compare
from minillama.gguf import GGUFFile, write_gguf
from minillama.gguf_llama import convert_to_gguf
from minillama.cli import main

DOCS = list(pydoc_data.topics.topics.values())
SPECIALS = ["<|begin_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>"]


def corpus_lines(n=3000, seed=0):
    "Thousands of varied lines: prose, code, whitespace runs, numbers, contractions, accents, CJK, emoji, specials."
    rng = np.random.default_rng(seed)
    lines = [l for d in DOCS for l in d.splitlines()][:n]
    extra = ["", " ", "\t\t", "   leading", "trailing   ", "I'M WE'LL they'Ve", "1234567 89 0.5e-3", "naïve café Ångström",
             "漢字かなカナ한국어", "🙂👍🏽🇫🇷", "<|eot_id|>", "a<|begin_of_text|>b<|eot_id|>\n", "\r\n\r\n\n", "x" * 300]
    rand = ["".join(rng.choice(list("aé 1\n\t'<|>🙂漢-_.,"), k)) for k in rng.integers(1, 50, 500)]
    return lines + extra + rand


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "style, vocab size -> (our tokenizer from tokenizer.json, the tokenizers object, the json path)."
    d, cache = tmp_path_factory.mktemp("bpe"), {}
    def make(style, size):
        if (style, size) not in cache:
            ref = train_bpe(DOCS[:40], style, size, SPECIALS)
            p = d / f"{style}-{size}" / "tokenizer.json"
            p.parent.mkdir()
            ref.save(str(p))
            cache[style, size] = (minillama.Tokenizer.from_file(p), ref, p)
        return cache[style, size]
    return make


@pytest.mark.parametrize("style", list(PRE_TOKENIZERS))
@pytest.mark.parametrize("size", [300, 1000, 3000])
def test_identical_to_tokenizers(trained, style, size):
    ours, ref, _ = trained(style, size)
    lines = corpus_lines()
    for s in lines:
        want = ref.encode(s).ids
        assert ours.encode(s) == want, (style, size, s)
        assert ours.decode(want) == ref.decode(want, skip_special_tokens=False), (style, size, s)
    print(f"{style} {size}: {len(lines)} lines identical")


@pytest.mark.parametrize("style", list(PRE_TOKENIZERS))
def test_gguf_vocabulary_round_trip(trained, tmp_path, style):
    ours, ref, _ = trained(style, 1000)
    write_gguf(tmp_path / "v.gguf", bpe_gguf_metadata(ours), {}, progress=False)
    g = minillama.Tokenizer.from_file(tmp_path / "v.gguf")
    assert isinstance(g, BPETokenizer) and g.pre == style
    for s in corpus_lines(800, seed=1): assert g.encode(s) == ref.encode(s).ids, s


def test_unknown_pre_tokenizer_is_refused(trained, tmp_path):
    ours, _, _ = trained("gpt-2", 300)
    md = {**bpe_gguf_metadata(ours), "tokenizer.ggml.pre": "deepseek-coder"}
    write_gguf(tmp_path / "v.gguf", md, {}, progress=False)
    with pytest.raises(MiniLlamaError, match="tokenizer.ggml.pre 'deepseek-coder' is not supported"):
        minillama.Tokenizer.from_file(tmp_path / "v.gguf")


def test_tokenizer_json_mutations_raise_only_our_error(trained, tmp_path):
    "Random damage to a tokenizer.json: our one-line error or a working tokenizer, never anything else."
    _, _, p = trained("llama-bpe", 300)
    good = p.read_text()
    rng = np.random.default_rng(0)
    outcomes = {"error": 0, "ok": 0}
    for k in range(300):
        s = list(good)
        for _ in range(rng.integers(1, 4)):
            i = int(rng.integers(0, len(s)))
            s[i] = rng.choice(list('{}[]":,0123456789abc \\'))
        q = tmp_path / "tokenizer.json"
        q.write_text("".join(s)[: int(rng.integers(len(s) // 2, len(s) + 1))] if k % 3 == 0 else "".join(s))
        try:
            t = minillama.Tokenizer.from_file(q)
            t.decode(t.encode("Hello 123 <|eot_id|>"))
            outcomes["ok"] += 1
        except MiniLlamaError as e:
            assert "\n" not in str(e) and str(q) in str(e)
            outcomes["error"] += 1
    assert outcomes["error"] > 100, outcomes


# --- chat templates -----------------------------------------------------------------------------------------------
TEMPLATES = {
    "llama3": ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
               " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
    "chatml": ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    "llama2": ("{% if messages[0]['role'] == 'system' %}{% set sys = '<<SYS>>\\n' + messages[0]['content'] + "
               "'\\n<</SYS>>\\n\\n' %}{% set rest = messages[1:] %}{% else %}{% set sys = '' %}{% set rest = messages %}"
               "{% endif %}{% for m in rest %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
               "{{ raise_exception('roles must alternate user/assistant') }}{% endif %}"
               "{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + (sys if loop.first else '') + m['content'] | trim"
               " + ' [/INST]' }}{% else %}{{ ' ' + m['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}"),
}
CONVERSATION = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi  there "},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is 2+2? Ünïcode 🙂"}]


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_rendering_matches_transformers(trained, name):
    from transformers import PreTrainedTokenizerFast
    _, ref, _ = trained("llama-bpe", 300)
    hf = PreTrainedTokenizerFast(tokenizer_object=ref, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    hf.chat_template = TEMPLATES[name]
    for msgs in (CONVERSATION, CONVERSATION[1:2]):
        for gen in (True, False):
            want = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            got = render_chat(TEMPLATES[name], msgs, gen, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
            assert got == want, (name, got, want)


def test_template_errors_are_one_line():
    for bad, must in [("{{ raise_exception('no system role') }}", "no system role"),
                      ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
                      ("{{ messages.pop() }}", "unsafe"), ("{% if %}", "TemplateSyntaxError"), ("{{ 1 / 0 }}", "ZeroDivision")]:
        with pytest.raises(MiniLlamaError, match=must) as e:
            render_chat(bad, CONVERSATION)
        assert "\n" not in str(e.value)
    with pytest.raises(MiniLlamaError, match="roles must alternate"):
        render_chat(TEMPLATES["llama2"], CONVERSATION[1:2] * 2, bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def chat_model(trained, tmp_path_factory):
    "A random Llama checkpoint with a byte-level tokenizer.json and a ChatML template, as published models come."
    from minillama.checkpoint import save_safetensors, hf_name
    from minillama.model import LlamaConfig, random_weights
    tok, _, p = trained("llama-bpe", 1000)
    d = tmp_path_factory.mktemp("chatmodel")
    cfg = LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size, hidden_dim=128,
                      max_seq_len=512, tie_embeddings=True)
    w = random_weights(cfg, seed=0)
    save_safetensors(d / "model.safetensors", {hf_name(n): a for n, a in w.items() if n != "output"})
    (d / "config.json").write_text(json.dumps(dict(architectures=["LlamaForCausalLM"], model_type="llama",
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=tok.vocab_size, max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True)))
    (d / "tokenizer.json").write_text(p.read_text())
    (d / "tokenizer_config.json").write_text(json.dumps(dict(chat_template=TEMPLATES["chatml"], eos_token="<|im_end|>",
                                                                bos_token="<|begin_of_text|>")))
    return d


def test_multi_turn_logits_equal_one_pass(chat_model):
    from minillama.cli import load_with_tokenizer
    model, tok = load_with_tokenizer(chat_model)
    chat = Chat(model, tok, system="Be brief.", record=True)
    for q in ["Hello!", "And then?", "Bye."]:
        "".join(chat.send(q, max_new_tokens=10, seed=1))
    for ids, row in chat.steps:
        r = compare(row, model.forward(np.array(ids))[-1], "float32", verbose=False)
        assert r["ok"], (len(ids), r)
    assert chat.ran < sum(len(ids) for ids, _ in chat.steps) / 3                    # the cache was reused
    assert tok.pieces.index("<|im_end|>") in end_of_turn_ids(tok)


def test_chat_stops_at_end_of_turn(chat_model):
    "Make the 3rd greedy token the end of the turn: the answer is the first two tokens, and the turn ends there."
    from minillama.cli import load_with_tokenizer
    model, tok = load_with_tokenizer(chat_model)
    probe = Chat(model, tok)
    probe.stop = set()
    five = "".join(probe.send("Hello!", max_new_tokens=5, temperature=0))
    greedy = probe.fed[-4:]                                                   # the 2nd..5th tokens were fed back
    c = Chat(model, tok)
    c.stop = {greedy[1]}                                                       # the 3rd token ends the turn
    two = "".join(c.send("Hello!", max_new_tokens=5, temperature=0))
    assert len(tok.encode(two)) <= 3 and five.startswith(two) and len(two) < len(five), (two, five)
    assert c.messages[-1] == {"role": "assistant", "content": two}


def test_cli_chat_reads_stdin(chat_model):
    "Each line of a piped stdin is a user turn; the printed answers are the Python API's, one line each."
    from minillama.cli import load_with_tokenizer
    r = subprocess.run(["minillama", "chat", "--model", str(chat_model), "--temperature", "0", "--max-new-tokens", "6",
                        "--system", "Be brief."], input="Hello!\nWhat is a list?\n", capture_output=True, text=True)
    model, tok = load_with_tokenizer(chat_model)
    c = Chat(model, tok, system="Be brief.")
    want = "".join("".join(c.send(q, 6, temperature=0)) + "\n" for q in ["Hello!", "What is a list?"])
    assert r.returncode == 0 and r.stderr == "" and r.stdout == want, (r.stdout, want, r.stderr)


def test_generate_with_tokenizer_json_checkpoint(chat_model, capsys):
    assert main(["generate", "Hello", "--model", str(chat_model), "--seed", "0", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.startswith("Hello")


def test_convert_carries_the_byte_level_vocabulary(chat_model, tmp_path):
    out = convert_to_gguf(chat_model, tmp_path / "m.gguf", progress=False)
    g = GGUFFile(out)
    assert g.metadata["tokenizer.ggml.model"] == "gpt2" and g.metadata["tokenizer.ggml.pre"] == "llama-bpe"
    assert g.metadata["tokenizer.chat_template"] == TEMPLATES["chatml"]
    a, b = minillama.Tokenizer.from_file(chat_model / "tokenizer.json"), minillama.Tokenizer.from_file(out)
    for s in corpus_lines(500): assert a.encode(s) == b.encode(s)
    ids = np.array(a.encode("Hello world, 123"))
    r = compare(minillama.load(out).forward(ids), minillama.load(chat_model).forward(ids), "float32", verbose=False)
    assert r["ok"], r


def test_convert_without_a_tokenizer_is_refused(hf_dir, tmp_path, capsys):
    d, _ = hf_dir("llama2")
    assert main(["convert", str(d), str(tmp_path / "m.gguf")]) == 1
    assert "no tokenizer" in capsys.readouterr().err and not (tmp_path / "m.gguf").exists()
    assert main(["convert", str(d), str(tmp_path / "m.gguf"), "--no-vocab"]) == 0


def test_gguf_vocabulary_mutations_raise_only_our_error(trained, tmp_path):
    "Random byte flips in a 'gpt2' GGUF vocabulary, and each key removed or of the wrong kind: our error or a tokenizer."
    ours, _, _ = trained("smollm", 300)
    md = bpe_gguf_metadata(ours)
    write_gguf(tmp_path / "v.gguf", md, {}, progress=False)
    raw = (tmp_path / "v.gguf").read_bytes()
    rng = np.random.default_rng(0)
    p, outcomes = tmp_path / "m.gguf", {"error": 0, "ok": 0}
    cases = []
    for _ in range(400):
        b = bytearray(raw)
        for _ in range(rng.integers(1, 4)): b[rng.integers(0, len(b))] = rng.integers(0, 256)
        cases.append(bytes(b))
    for k in md:                                                 # each key missing, then holding a number
        for v in (None, 7):
            m2 = {kk: vv for kk, vv in md.items() if kk != k}
            if v is not None: m2[k] = v
            write_gguf(p, m2, {}, progress=False); cases.append(p.read_bytes())
    for c in cases:
        p.write_bytes(c)
        try:
            t = minillama.Tokenizer.from_file(p)
            t.decode(t.encode("Hello 123 <|eot_id|> 🙂"))
            outcomes["ok"] += 1
        except MiniLlamaError as e:
            assert "\n" not in str(e), str(e)
            outcomes["error"] += 1
    assert outcomes["error"] > 50, outcomes
