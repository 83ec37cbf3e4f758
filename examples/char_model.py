"""Many-to-many: a character-level language model, trained by truncated BPTT, then sampled.

The text is Python's own help on its statements, operators and types: the
pages ``help("if")`` shows, which ship with Python in ``pydoc_data.topics``
(465,000 characters on Python 3.11; nothing is downloaded). The last tenth
is held out.

Embedding -> LSTM -> Linear predicts each next character. The training text
is cut into 32 streams read side by side; ``fastrnn.truncated_bptt`` runs
them in chunks of 50 steps, the LSTM (``stateful=True``) carrying its state
from chunk to chunk, and backpropagates each chunk's loss through its 50
steps. Cross-entropy on the held-out text is printed in bits per character
against a unigram and a bigram model of the training text (character counts,
add-one smoothed); then the model writes a few samples (``fastrnn.generate``).

    python examples/char_model.py
    python examples/char_model.py --quick
"""
from __future__ import annotations

import textwrap
from typing import Dict, Optional, Sequence

import numpy as np

import fastrnn
from _shared import parse_args, plot_losses, plt, progress, report, save_figure

STREAMS = 32        # batch: the training text read at 32 places at once
K1 = 50             # steps per truncated-BPTT chunk
SEGMENT = 10 * K1   # steps per truncated_bptt call (the progress bar's tick)
PROMPTS = ["The ", "for ", "If the "]


def load_text() -> str:
    from pydoc_data.topics import topics
    return "".join(topics[name] for name in sorted(topics))


def ngram_bits(train: np.ndarray, test: np.ndarray, V: int) -> Dict[str, float]:
    """Bits per character on test of the unigram and bigram models of train."""
    unigram = np.bincount(train, minlength=V) + 1.0
    unigram /= unigram.sum()
    bigram = np.ones((V, V))
    np.add.at(bigram, (train[:-1], train[1:]), 1)
    bigram /= bigram.sum(axis=1, keepdims=True)
    return {"unigram": float(-np.log2(unigram[test]).mean()),
            "bigram": float(-np.log2(bigram[test[:-1], test[1:]]).mean())}


def streams(ids: np.ndarray, B: int) -> np.ndarray:
    """ids (N,) as B streams side by side: (N // B, B), time-major."""
    T = len(ids) // B
    return ids[:T * B].reshape(B, T).T


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    args = parse_args(__doc__, argv, plot="char_model.png")
    text = load_text()
    chars = sorted(set(text))
    V = len(chars)
    ids = np.searchsorted(chars, list(text))                 # each character's index in chars
    n_train = len(ids) * 9 // 10
    train, test = ids[:n_train], ids[n_train:]
    baselines = ngram_bits(train, test, V)
    print(f"{len(text):,} characters ({V} distinct): {n_train:,} to train on, "
          f"{len(test):,} held out")

    hidden, epochs = (128, 1) if args.quick else (256, 3)
    stream = streams(train, STREAMS)                         # (T, 32) ids
    if args.quick:
        stream = stream[:100 * K1 + 1]                       # the first 100 chunks
    model = fastrnn.Sequential(
        fastrnn.Embedding(V, 32, seed=args.seed),
        fastrnn.LSTM(32, hidden, stateful=True, seed=args.seed),   # carries its state
        fastrnn.Linear(hidden, V, seed=args.seed))
    loss_fn = fastrnn.CrossEntropyLoss()
    opt = fastrnn.Adam(model.named_parameters(), lr=1e-2 if args.quick else 5e-3)
    schedule = fastrnn.CosineAnnealingLR(opt, T_max=epochs)

    T = len(stream) - 1                                      # inputs stream[t], targets stream[t + 1]
    chunks = -(-T // K1)
    losses = []
    bar = progress(None, f"LSTM(32, {hidden}) on {V} characters", total=epochs * chunks)
    for _ in range(epochs):
        for s in range(0, T, SEGMENT):
            e = min(s + SEGMENT, T)
            # each K1 steps: forward, the loss of the chunk, BPTT through it, Adam
            chunk_losses = fastrnn.truncated_bptt(model, loss_fn, opt, stream[s:e],
                                                  stream[s + 1:e + 1], k1=K1, max_norm=1.0,
                                                  reset_state=(s == 0))
            losses += [value / np.log(2) for value in chunk_losses]   # nats -> bits
            bar.update(len(chunk_losses))
            bar.set_postfix(bits_per_char=f"{losses[-1]:.2f}")
        schedule.step()
    bar.close()

    # the held-out text, as 16 streams from zero states, in inference
    model.reset_state()
    held_out = streams(test, 16)
    logits = model(held_out[:-1], training=False)
    bits = fastrnn.cross_entropy(logits, held_out[1:])[0] / np.log(2)
    model.reset_state()
    report("LSTM bits per character (held out)", bits,
           {f"baseline: {name} model": b for name, b in baselines.items()}, fmt="{:.3f}")

    stepper = fastrnn.Stepper(model)       # the cells' one-step path (build it after training)
    samples = []
    for i, prompt in enumerate(PROMPTS):
        out = fastrnn.generate(stepper, np.searchsorted(chars, list(prompt)), steps=200,
                               temperature=0.6, seed=args.seed + i)
        samples.append(prompt + "".join(chars[j] for j in out))
        print(f"\n--- sample {i + 1} (temperature 0.6) ---\n{samples[-1]}")

    fig, (ax_loss, ax_text) = plt.subplots(1, 2, figsize=(13, 4.5),
                                           gridspec_kw={"width_ratios": [1, 1.4]})
    plot_losses(ax_loss, losses, "bits per character (training chunk)")
    for (name, b), color in zip(baselines.items(), ("tab:red", "tab:orange")):
        ax_loss.axhline(b, color=color, ls="--", lw=1, label=f"{name}, held out: {b:.2f}")
    ax_loss.axhline(bits, color="tab:green", ls="--", lw=1, label=f"LSTM, held out: {bits:.2f}")
    ax_loss.legend(fontsize=8)
    ax_text.axis("off")
    ax_text.set_title("samples")
    shown = [textwrap.fill(" ".join(s.split()), 60) for s in samples]   # runs of spaces folded
    ax_text.text(0, 1, "\n\n".join(shown), va="top", family="monospace", fontsize=10)
    save_figure(fig, args.plot)
    return {"bits_per_char": bits, **baselines}


if __name__ == "__main__":
    main()
