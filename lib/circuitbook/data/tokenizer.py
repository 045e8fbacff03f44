"""A byte-level BPE tokenizer (HF `tokenizers`, vocab 2048) trained on the corpus.

Pre-tokenization is GPT-2's without the English contractions (which would split
Python strings like `'s...`), and with every newline a token of its own, so each
contrast-task target (`'`, `"`, `]`, `]]`, `.`, ` +=`, `:`, newline) is one token.
"""

from __future__ import annotations

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from circuitbook.data.corpus import EOT

PATTERN = r"\n| ?[\p{L}_][\p{L}\p{N}_]*| ?\p{N}+| ?[^\s\p{L}\p{N}_]+|[ \t]+(?!\S)|[ \t]+|\s"
TASK_TOKENS = ("'", '"', "]", "]]", ".", " +=", ":", "\n")


class CodeTokenizer:
    """Thin wrapper: encode/decode, `single_token`, the pad/EOT id, (de)serialisation to a tensor."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.eot_id = tok.token_to_id(EOT)
        self.pad_id = self.eot_id
        self.vocab_size = tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts)]

    def decode(self, ids) -> str:
        return self.tok.decode(list(map(int, ids)), skip_special_tokens=False)

    def tokens(self, text: str) -> list[str]:
        """The text of each token of `text` (readable, not byte-level symbols)."""
        return [self.decode([i]) for i in self.encode(text)]

    def single_token(self, text: str) -> int:
        ids = self.encode(text)
        if len(ids) != 1:
            raise ValueError(f"{text!r} is {len(ids)} tokens {[self.decode([i]) for i in ids]}, not one")
        return ids[0]

    def to_tensor(self) -> torch.Tensor:
        return torch.frombuffer(bytearray(self.tok.to_str().encode()), dtype=torch.uint8)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> CodeTokenizer:
        return cls(Tokenizer.from_str(bytes(t.tolist()).decode()))


def train_tokenizer(texts: list[str], vocab_size: int = 2048) -> CodeTokenizer:
    """Train BPE on `texts` and check that every task target is a single token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    ct = CodeTokenizer(tok)
    for t in TASK_TOKENS:
        ct.single_token(t)  # raises if a target is not one token
    return ct
