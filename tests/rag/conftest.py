import pytest


@pytest.fixture(scope="session")
def tokenizer(bundled_folder):
    from lmlab.tokenizer import Tokenizer
    return Tokenizer.from_folder(bundled_folder)


CORPUS = {
    "paris.txt": "Paris is the capital of France. The Eiffel Tower was completed in 1889 for the World's Fair.",
    "berlin.md": "# Berlin\n\nBerlin is the capital of Germany. The Brandenburg Gate stands in its centre.",
    "nile.html": "<html><head><style>p{}</style></head><body><nav>Home | About</nav><article><h1>Nile</h1>"
                 "<p>The Nile is a river in Africa, flowing north into the Mediterranean Sea. It is about "
                 "6,650 kilometres long and crosses eleven countries.</p></article></body></html>",
    "rows.jsonl": '{"id": "kiwi", "text": "The kiwi is a flightless bird native to New Zealand."}\n'
                  '{"id": "volcano", "text": "Mount Etna is an active volcano on the island of Sicily."}\n',
}


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in CORPUS.items():
        (folder / name).write_text(text)
    return folder
