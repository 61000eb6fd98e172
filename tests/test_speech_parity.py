"""Speech -> motion (ARTalk, SPEC §11): the whole model against the reference's own numbers
(``python -m gagavatar.speech.parity``), a semantic change failing it, and the parts against
independent references (torch's MultiheadAttention, formulas written out, scipy)."""
from __future__ import annotations

import gc
import logging
import math

import numpy as np
import pytest
import torch
from conftest import REFERENCE

from gagavatar import known_files
from gagavatar.speech import codec, parity
from gagavatar.speech.config import SpeechConfig, paper
from gagavatar.speech.generator import CrossChunkAttention, SpeechModel
from gagavatar.speech.postprocess import (FOREHEAD_VERTICES, head_rotation_to_reference, motion_frames,
                                          smooth_forehead, smooth_motion)
from gagavatar.speech.wav2vec import SelfAttention, Wav2Vec2, normalize_audio
from gagavatar.speech.weights import (SpeechWeightsError, empty_model, load_speech_model, load_style_motion,
                                      model_from_state)

FIXTURE_DIR = REFERENCE / "artalk_fixture"

# a small model of the same structure: every code path, in milliseconds
TINY = SpeechConfig(name="test", conv_channels=(8, 8), conv_kernels=(10, 3), conv_strides=(5, 2), audio_width=16,
                    audio_depth=1, audio_heads=2, audio_ff=32, pos_conv_kernel=4, pos_conv_groups=2, style_width=8,
                    style_depth=1, style_heads=2, style_ff=16, code_dim=4, codec_width=8, codec_depth=1,
                    codec_heads=2, scales=(1, 2, 4), width=8, depth=1, heads=2)


def tiny_model(seed: int = 0, config: SpeechConfig = TINY) -> SpeechModel:
    torch.manual_seed(seed)
    model = SpeechModel(config).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


# ---------------------------------------------------------------------- the reference fixture
@pytest.fixture(scope="module")
def fixture_dir():
    if not (FIXTURE_DIR / parity.FIXTURE).is_file():
        pytest.skip(f"the ARTalk fixture is not at {FIXTURE_DIR} (only CI and developers have it)")
    return FIXTURE_DIR


@pytest.fixture(scope="module")
def reference(fixture_dir):
    """(listing, fixture arrays, the float64 model with SPEC §8's weights), built once; freed after."""
    listing, fixture = parity.load_fixture(fixture_dir)
    model = parity.deterministic_model(listing, int(fixture["seed"]), fixture)
    yield listing, fixture, model
    del model
    gc.collect()


def test_the_model_is_the_release_tensor_for_tensor(fixture_dir):
    listing = parity.read_listing(fixture_dir / parity.LISTING)
    state = empty_model().state_dict()
    assert [(n, s) for n, s, _ in listing] == [(n, tuple(t.shape)) for n, t in state.items()]
    learned = sum(math.prod(s) for _, s, kind in listing if kind == "param")
    assert learned == sum(p.numel() for p in empty_model().parameters()) == 489_538_346


def test_parity_check_passes(reference, fixture_dir, monkeypatch, capsys):
    """`python -m gagavatar.speech.parity DIR`: every group within tolerance, every bit equal."""
    monkeypatch.setattr(parity, "deterministic_model", lambda *a, **k: reference[2])
    assert parity.main([str(fixture_dir)]) == 0
    printed = capsys.readouterr().out
    for group in parity.TOLERANCE:
        assert group in printed
    assert "FAIL" not in printed


def test_style_pe_quirk_dropped_fails(reference, fixture_dir, monkeypatch, capsys):
    """Row t to frame t (the textbook encoding) instead of the reference's one row pe[T]: the
    style feature is far off, and the check says FAIL and exits 1."""
    _, fixture, model = reference
    model.style_encoder.PE.row = False
    try:
        wrong = parity.compute(fixture, model, groups={"style_feature"})
    finally:
        model.style_encoder.PE.row = True
    (name, diff, _, tol), = parity.compare(fixture, wrong)
    assert name == "style_feature" and diff > 1e-2 > tol
    # every other group as the fixture has it: only the changed one fails
    exact = {k: np.asarray(fixture[k], np.float64) for k in parity.TOLERANCE} | wrong
    exact["bits_per_step"] = fixture["bits_per_step"]
    monkeypatch.setattr(parity, "deterministic_model", lambda *a, **k: model)
    monkeypatch.setattr(parity, "compute", lambda *a, **k: exact)
    assert parity.main([str(fixture_dir)]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.endswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith("style_feature")


def first_chunk_from_fixture_bits(fixture, model):
    """The codec alone: the first chunk's motion decoded from the fixture's own bits (its last
    generator step), after the encoded zero motion, as the reference decodes it."""
    n = len(model.config.scales)
    steps = fixture["bits_per_step"]
    start = int(steps[:n - 1].sum())
    bits = torch.from_numpy(fixture["bits"][start:start + int(steps[n - 1])].astype(np.int64))
    bits = bits.view(1, model.config.tokens, model.config.code_dim)
    with torch.no_grad():
        zero = torch.zeros(1, model.config.chunk_frames, model.config.motion_dim, dtype=torch.float64)
        return model.basic_vae.decode(model.basic_vae.encode(zero), bits)[0].numpy()


def test_codec_alone_and_its_attention_scale(reference):
    """The codec decodes the fixture's bits into the fixture's motion (~1e-13); with its attention
    scaled by the head width (the usual choice) instead of the width, far beyond tolerance."""
    _, fixture, model = reference
    frames = model.config.chunk_frames
    tol = parity.TOLERANCE["motions"]
    assert np.abs(first_chunk_from_fixture_bits(fixture, model) - fixture["motions"][:frames]).max() < tol
    blocks = [m for m in model.basic_vae.modules() if isinstance(m, codec.CodecAttention)]
    for m in blocks:
        m.scale = (m.to_out.in_features // m.heads) ** -0.5
    try:
        wrong = first_chunk_from_fixture_bits(fixture, model)
    finally:
        for m in blocks:
            m.scale = m.to_out.in_features ** -0.5
    assert np.abs(wrong - fixture["motions"][:frames]).max() > 1e-2


# ---------------------------------------------------------------------- parts, independent references
def test_wav2vec_attention_is_torch_multihead_attention():
    torch.manual_seed(0)
    ours = SelfAttention(16, 4).double()
    theirs = torch.nn.MultiheadAttention(16, 4, batch_first=True).double()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        theirs.out_proj.load_state_dict(ours.out_proj.state_dict())
        x = torch.randn(2, 7, 16, dtype=torch.float64)
        torch.testing.assert_close(ours(x), theirs(x, x, x, need_weights=False)[0], rtol=0, atol=1e-12)


def brute_attention(q, k, v, scale, mask=None):
    """softmax(q k^T scale + mask) v, one query row at a time (numpy)."""
    out = np.zeros_like(q)
    for i in range(q.shape[0]):
        s = k @ q[i] * scale + (0 if mask is None else mask[i])
        w = np.exp(s - s.max())
        out[i] = (w / w.sum()) @ v
    return out


def test_codec_attention_by_formula():
    """to_qkv's output splits as (qkv, heads, dim); scale width^-0.5; pre-LN; the codec mask."""
    torch.manual_seed(1)
    W, H, L = 12, 3, 6
    att = codec.CodecAttention(W, H).double()
    x = torch.randn(1, L, W, dtype=torch.float64)
    mask = codec.codec_mask(L // 2).double()
    with torch.no_grad():
        got = att(x, mask)[0].numpy()
        qkv = att.to_qkv(att.norm(x))[0].numpy()
    d = W // H
    heads = []
    for h in range(H):
        q, k, v = (qkv[:, i * W + h * d: i * W + (h + 1) * d] for i in range(3))
        heads.append(brute_attention(q, k, v, W ** -0.5, mask[0, 0].numpy()))
    want = np.concatenate(heads, 1) @ att.to_out.weight.detach().numpy().T + att.to_out.bias.detach().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # the previous half saw only itself: changing the second half leaves it alone
    y = x.clone()
    y[:, L // 2:] += 1
    with torch.no_grad():
        torch.testing.assert_close(att(y, mask)[:, :L // 2], att(x, mask)[:, :L // 2], rtol=0, atol=0)


def test_generator_attention_by_formula():
    """Keys/values over [prev | x]; q, k unit length; q x exp(min(s, ln 100)); scale 1."""
    torch.manual_seed(2)
    C, H, P, L = 8, 2, 3, 4
    att = CrossChunkAttention(C, H).double()
    with torch.no_grad():
        att.scale_mul_1H11.copy_(torch.tensor([1.0, 7.0]).view(1, 2, 1, 1))  # head 2 clamped at ln 100
        x, prev = torch.randn(1, L, C, dtype=torch.float64), torch.randn(1, P, C, dtype=torch.float64)
        mask = torch.zeros(1, 1, L, P + L, dtype=torch.float64)
        mask[..., P + 2:] = -math.inf
        got = att(x, prev, mask)[0].numpy()
        both = torch.cat([prev, x], 1)[0]
        q, k, v = att.query(x[0]).numpy(), att.key(both).numpy(), att.value(both).numpy()
    d = C // H
    heads = []
    for h, s in enumerate((math.exp(1.0), 100.0)):
        qh, kh = q[:, h * d:(h + 1) * d], k[:, h * d:(h + 1) * d]
        qh = qh / np.linalg.norm(qh, axis=1, keepdims=True) * s
        kh = kh / np.linalg.norm(kh, axis=1, keepdims=True)
        heads.append(brute_attention(qh, kh, v[:, h * d:(h + 1) * d], 1.0, mask[0, 0].numpy()))
    want = np.concatenate(heads, 1) @ att.proj.weight.detach().numpy().T + att.proj.bias.detach().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def np_area(x, n):
    """Mean over equal windows (the lengths here divide T)."""
    return x.reshape(n, x.shape[0] // n, -1).mean(1)


def np_linear(x, T):
    """Linear interpolation with half-pixel centres (align_corners False), edges clamped."""
    t = x.shape[0]
    src = np.clip((np.arange(T) + 0.5) * t / T - 0.5, 0, t - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, t - 1)
    w = (src - lo)[:, None]
    return x[lo] * (1 - w) + x[hi] * w


def test_multiscale_bsq_by_formula():
    scales, T, C = (1, 5, 25, 50, 100), 100, 32
    rng = np.random.default_rng(3)
    f = rng.normal(size=(T, C))
    bits = codec.quantize(torch.from_numpy(f)[None], scales)[0].numpy()
    residual, want, codes = f.copy(), [], []
    for n in scales:
        z = np_area(residual, n)
        b = z > 0  # normalising does not change the sign
        code = np.where(b, 1.0, -1.0) / math.sqrt(C)
        want.append(b)
        codes.append(code)
        residual = residual - np_linear(code, T)
    np.testing.assert_array_equal(bits, np.concatenate(want).astype(int))
    # decoding sums the codes; the generator's inputs are the running sums, pooled to the next scale
    got = codec.dequantize(torch.from_numpy(bits)[None], scales, torch.float64)[0].numpy()
    np.testing.assert_allclose(got, sum(np_linear(c, T) for c in codes), rtol=0, atol=1e-14)
    nxt = codec.next_scale_inputs(torch.from_numpy(bits)[None], scales, torch.float64)[0].numpy()
    running = np.cumsum([np_linear(c, T) for c in codes[:-1]], axis=0)
    want_next = np.concatenate([np_area(running[s], scales[s + 1]) for s in range(len(scales) - 1)])
    np.testing.assert_allclose(nxt, want_next, rtol=0, atol=1e-14)
    # a known input: one scale, the sign of each channel
    known = torch.tensor([[[0.3, -0.2, 0.0, 5.0]]], dtype=torch.float64)
    assert codec.quantize(known, (1,)).tolist() == [[[1, 0, 0, 1]]]


def test_audio_normalised_per_chunk_unbiased():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]], dtype=torch.float64)
    std = math.sqrt(((x - 3) ** 2).sum().item() / 3)
    torch.testing.assert_close(normalize_audio(x), (x - 3) / (std + 1e-6))


def test_positional_conv_loads_both_weight_norm_layouts():
    torch.manual_seed(4)
    enc = Wav2Vec2(TINY).double().eval()
    state = enc.state_dict()
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                  "weight_v"): v
           for k, v in state.items()}
    assert "encoder.pos_conv_embed.conv.weight_g" in old
    again = Wav2Vec2(TINY).double().eval()
    again.load_state_dict(old, strict=True)
    audio = torch.randn(1, 2560, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(again(audio), enc(audio), rtol=0, atol=0)
        # weight norm over dim 2: w = g v / |v| with the norm over dims 0 and 1
        g = state["encoder.pos_conv_embed.conv.parametrizations.weight.original0"]
        v = state["encoder.pos_conv_embed.conv.parametrizations.weight.original1"]
        w = enc.encoder.pos_conv_embed.conv.weight
        torch.testing.assert_close(w, g * v / v.norm(dim=(0, 1), keepdim=True))


def test_tiny_model_end_to_end_and_chunking():
    """Frames = ceil(seconds x fps); audio zero-padded to whole chunks; two chunks of
    scale-by-scale steps; the style condition pushes away from the null token."""
    model = tiny_model()
    audio = torch.randn(2560 + 1000, dtype=torch.float64)  # 1.4 chunks
    record = []
    with torch.no_grad():
        features, frames = model.encode_audio(audio[None])
        assert frames == math.ceil(3560 / 16000 * 25) == 6 and len(features) == 2
        motion = model.motions_from_features(features, frames, None, record)
    assert motion.shape == (1, 6, 106)
    assert [r.shape[1] for r in record] == [1, 3, 7] * 2
    torch.testing.assert_close(model.generate(audio), motion[0], rtol=0, atol=0)
    style = torch.randn(1, 50, 106, dtype=torch.float64)
    with torch.no_grad():
        cond = model.style_condition(style)
        want = model.style_cond_embed(model.style_encoder(style))[:, None] * 1.1 - model.null_style_cond * 0.1
        torch.testing.assert_close(cond, want, rtol=0, atol=0)
        torch.testing.assert_close(model.style_condition(None, 2), model.null_style_cond.expand(2, 1, -1))
    assert model.generate(audio, style[0]).shape == (6, 106)
    with pytest.raises(ValueError, match="empty"):
        model.generate(audio[:0])


# ---------------------------------------------------------------------- post-processing and glue
def test_smoothing_keeps_polynomials_and_zeroes_the_jaw():
    t = torch.arange(20, dtype=torch.float64)[:, None]
    motion = (0.1 * t ** 2 - t + torch.arange(106) / 10).clone()
    motion[:, 100:103] = 0.01 * t ** 3 - 0.2 * t  # cubic: kept by the order-3 head-rotation filter
    out = smooth_motion(motion)
    want = motion.clone()
    want[:, 104:106] = 0
    torch.testing.assert_close(out, want, rtol=0, atol=1e-9)
    assert smooth_motion(motion, fix_pose=True)[:, 100:103].abs().max() == 0
    assert smooth_motion(motion[:3]).shape == (3, 106)  # shorter than the windows
    assert smooth_motion(motion.float()).dtype == torch.float32


def test_head_rotation_to_reference_against_scipy():
    from scipy.spatial.transform import Rotation

    r = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.5, 0.2], [1.2, 0.4, -2.0]], dtype=torch.float64)
    got = head_rotation_to_reference(r).numpy()
    for i, rv in enumerate(r.numpy()):
        R = Rotation.from_rotvec(rv * [-1, 1, -1]).as_matrix() @ np.diag([-1.0, 1.0, -1.0])
        np.testing.assert_allclose(got[i], np.linalg.inv(R), rtol=0, atol=1e-12)


def test_motion_frames_keep_the_source_camera_and_shape():
    from gagavatar.data.frame import FrameParams
    from gagavatar.geometry import Camera

    transform = torch.tensor([[[-0.99, 0.0, -0.14, 0.03], [0.0, 1.0, -0.05, -0.02], [0.14, -0.05, -0.99, 9.2]]])
    z3 = torch.zeros(1, 3)
    source = FrameParams(torch.randn(1, 300), torch.randn(1, 100), z3, z3, z3, torch.zeros(1, 6), z3,
                         Camera.from_reference(transform, (640, 480)))
    motion = torch.randn(7, 106)
    frames = motion_frames(motion, source)
    assert len(frames) == 7 and frames.camera.width == 640 and frames.camera.height == 480
    torch.testing.assert_close(frames.shape, source.shape.expand(7, -1))
    torch.testing.assert_close(frames.expression, motion[:, :100])
    torch.testing.assert_close(frames.jaw_pose, motion[:, 103:106])
    assert frames.global_pose.abs().max() == frames.eye_pose.abs().max() == frames.neck_pose.abs().max() == 0
    torch.testing.assert_close(frames.camera.K, source.camera.K.expand(7, -1, -1))
    ref = frames.camera.to_reference()
    torch.testing.assert_close(ref[:, :, 3], transform[:, :, 3].expand(7, -1))
    torch.testing.assert_close(ref[:, :, :3], head_rotation_to_reference(motion[:, 100:103]), rtol=0, atol=1e-6)


def test_forehead_smoothing_closed_form():
    V = 5023
    verts = torch.zeros(6, V, 3, dtype=torch.float64)
    verts[1:] = 1.0  # a step after the first frame
    out = smooth_forehead(verts)
    idx = list(FOREHEAD_VERTICES)
    for t in range(6):
        torch.testing.assert_close(out[t, idx], torch.full((68, 3), 1 - 0.98 ** t if t else 0.0,
                                                           dtype=torch.float64))
    others = [v for v in range(V) if v not in set(idx)]
    torch.testing.assert_close(out[:, others], verts[:, others], rtol=0, atol=0)
    with pytest.raises(ValueError, match="FLAME"):
        smooth_forehead(torch.zeros(2, 100, 3))


# ---------------------------------------------------------------------- the released files
def test_loader_names_what_is_wrong(tmp_path):
    state = tiny_model().float().state_dict()
    good = tmp_path / "good.pt"
    torch.save(state, good)
    model = load_speech_model(good, config=TINY)
    assert not model.training and model.pos_embed.dtype == torch.float32 and model.lvl_idx.dtype == torch.long

    broken = dict(state)
    broken.pop("logits_head.bias")
    broken["extra.weight"] = torch.zeros(1)
    broken["vqfeat_embed.weight"] = torch.zeros(3, 3)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(SpeechWeightsError) as err:
        load_speech_model(tmp_path / "broken.pt", config=TINY)
    message = str(err.value)
    assert "\n" not in message
    for part in ("missing", "logits_head.bias", "unexpected", "extra.weight", "mis-shaped", "vqfeat_embed.weight"):
        assert part in message

    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:4000])
    with pytest.raises(ValueError, match="truncated"):
        load_speech_model(tmp_path / "cut.pt", config=TINY)
    with pytest.raises(FileNotFoundError, match="github.com/xg-chu/ARTalk"):
        load_speech_model(tmp_path / "ARTalk_wav2vec.pt")
    with pytest.raises(SpeechWeightsError, match="not a state dict|not a speech model"):
        torch.save(torch.zeros(3), tmp_path / "tensor.pt")
        load_speech_model(tmp_path / "tensor.pt", config=TINY)


def test_a_release_sized_file_with_another_hash_is_warned_about(tmp_path, monkeypatch, caplog):
    state = tiny_model().float().state_dict()
    path = tmp_path / "ARTalk_wav2vec.pt"
    torch.save(state, path)
    fake = known_files.KnownFile("ARTalk's released speech model", "ARTalk_wav2vec.pt", path.stat().st_size, "0" * 64)
    monkeypatch.setitem(known_files.KNOWN_FILES, "speech_model", fake)
    with caplog.at_level(logging.WARNING):
        load_speech_model(path, config=TINY)
    assert "not its SHA-256" in caplog.text


def test_style_motion_files(tmp_path):
    torch.save(torch.randn(50, 106), tmp_path / "natural_0.pt")
    assert load_style_motion(tmp_path / "natural_0.pt").shape == (50, 106)
    torch.save(torch.randn(50, 100), tmp_path / "bad.pt")
    with pytest.raises(SpeechWeightsError, match=r"\[T, 106\]"):
        load_style_motion(tmp_path / "bad.pt")


def test_old_weight_norm_names_through_the_loader():
    state = tiny_model().state_dict()
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                  "weight_v"): v
           for k, v in state.items()}
    model = model_from_state(old, TINY, dtype=torch.float64)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)


def test_paper_config_defaults():
    c = paper()
    assert (c.chunk_frames, c.chunk_samples, c.tokens) == (100, 64_000, 181)
    assert c.style_pe_row and c.codec_float32_features
