import pytest

from gpt.models.tokenizer import CharTokenizer, UnknownCharactersError


def test_round_trip_exact():
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n  ¡Olé! ünïcode"
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == len(set(text))
    assert tok.boundary_id is None


def test_unknown_characters_are_an_error_naming_them():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(UnknownCharactersError) as e:
        tok.encode("a bad cab!")
    assert e.value.chars == ["!", "d"]
    assert "'!'" in str(e.value) and "'d'" in str(e.value)


def test_document_mode_boundary_is_token_zero():
    tok = CharTokenizer.from_text("emma\nolivia\nava\n", documents=True)
    assert tok.boundary_id == 0 and tok.chars[0] == "\n"
    assert tok.encode("ava") == [tok.stoi[c] for c in "ava"] and 0 not in tok.encode("ava")
    assert tok.decode([0, *tok.encode("emma"), 0]) == "\nemma\n"


@pytest.mark.parametrize("documents", [False, True])
def test_save_load(tmp_path, documents):
    tok = CharTokenizer.from_text('hello\nworld \t"{}\\\n', documents=documents)
    tok.save(tmp_path)
    loaded = CharTokenizer.load(tmp_path)
    assert loaded.chars == tok.chars and loaded.documents == documents


def test_the_first_format_still_loads(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"type": "char", "version": 1, "documents": true, "chars": ["\\n", "a"]}')
    loaded = CharTokenizer.load(tmp_path)
    assert loaded.chars == ["\n", "a"] and loaded.documents


def test_bad_tokenizer_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"type": "char", "chars": ["a", "a"]}')
    with pytest.raises(ValueError, match="tokenizer.json is not a valid"):
        CharTokenizer.load(tmp_path / "tokenizer.json")
    with pytest.raises(FileNotFoundError, match="tokenizer.json is missing"):
        CharTokenizer.load(tmp_path / "nope" / "tokenizer.json")
