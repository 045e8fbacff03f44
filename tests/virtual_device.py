"""A virtual accelerator for CPU-only machines: proves that code computes on the device it was given.

`CIRCUITBOOK_DEVICE=cpu:0` makes `circuitbook.config.device()` return `torch.device("cpu", 0)`: a real device
(everything runs, on the CPU) that differs from the default `cpu`. While a `VirtualDevice` mode is active,
every tensor is either *on the device* or *on the host*, exactly as on a machine with a GPU:

- on the device: what `.to(cpu:0)` (so `model.to(device())`) returns, what a factory makes with
  `device=cpu:0`, what a `*_like` / `new_*` makes from an on-device tensor, and every result of an op one of
  whose inputs is on the device (a gradient is where its tensor is);
- on the host: everything else (`torch.zeros(n)`, `torch.from_numpy`, a loaded artifact, `.cpu()`).

An on-device tensor reports `.device == cpu:0`, so `torch.zeros(n, device=x.device)` lands on the device too.
The mode records what a real accelerator would refuse: an op mixing on-device tensors with host tensors of one
or more dimensions (host scalars are allowed, as CUDA allows them; so are host index tensors in `x[idx]` and
cross-device `copy_`), `.numpy()` of an on-device tensor, and a random draw on the device from a host
generator. It also counts the matrix products (linear, matmul, embedding, attention ...) run on each side,
so a test can require that the heavy work ran on the device.
"""

from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

DEVICE = torch.device("cpu", 0)  # what CIRCUITBOOK_DEVICE=cpu:0 makes config.device() return
_TAG = "_on_virtual_device"
_LIB = str(Path(__file__).resolve().parents[1] / "lib" / "circuitbook")

HEAVY = {"linear", "matmul", "mm", "bmm", "einsum", "conv2d", "embedding", "scaled_dot_product_attention",
         "__matmul__", "__rmatmul__", "addmm", "baddbmm", "bilinear", "conv1d"}
_LIKE = {"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like",
         "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor"}
_RANDOM = {"rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial", "rand_like", "randn_like",
           "randint_like", "uniform_", "normal_", "bernoulli_", "random_", "exponential_", "geometric_",
           "cauchy_", "log_normal_"}
_NO_CHECK = {"copy_", "__setstate__", "__deepcopy__", "__reduce_ex__", "_has_compatible_shallow_copy_type",
             "__get__", "__set__", "detach", "is_floating_point", "dim", "size", "numel", "item", "tolist",
             "__len__", "__bool__", "__float__", "__int__", "__index__", "__format__", "__repr__"}


def on_device(t) -> bool:
    return isinstance(t, torch.Tensor) and t.__dict__.get(_TAG, False)


def _tag(out, value: bool) -> None:
    for t in tree_flatten(out)[0]:
        if isinstance(t, torch.Tensor):
            try:
                t.__dict__[_TAG] = value
            except (AttributeError, RuntimeError):  # a tensor without a __dict__ (rare C++-made subclasses)
                pass


def _is_device(d) -> bool:
    if d is None:
        return False
    if isinstance(d, torch.Tensor):
        return on_device(d)
    try:
        return torch.device(d) == DEVICE
    except (RuntimeError, TypeError):
        return False


def _where() -> str:
    """The innermost frames of the library that led to the current op, and the code that called the library."""
    frames = [f for f in traceback.extract_stack()[:-3] if "virtual_device" not in f.filename
              and "/torch/" not in f.filename]
    lib = [f for f in frames if f.filename.startswith(_LIB)]
    user = [f for f in frames if not f.filename.startswith(_LIB) and "site-packages" not in f.filename]
    inner = lib[-3:] if lib else frames[-3:]
    shown = user[-1:] + inner if user and user[-1] not in inner else inner
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.line}" for f in reversed(shown))


class VirtualDevice(TorchFunctionMode):
    """Track host / device placement of every tensor (see the module docstring). After the `with` block:
    `violations` (what a real accelerator would refuse, with where), `heavy` Counter {(op, on_device): n},
    `host_sites` where the host matrix products ran."""

    def __init__(self):
        super().__init__()
        self.violations: list[str] = []
        self.heavy: Counter = Counter()
        self.host_sites: Counter = Counter()  # where the host matrix products ran: {where: n}
        self.device_generators: set[int] = set()
        self._orig_generator = None

    # a torch.Generator made with device=cpu:0 counts as the device's generator
    def __enter__(self):
        self._orig_generator = torch.Generator
        mode = self

        class Generator(self._orig_generator):
            def __new__(cls, device="cpu"):
                g = super().__new__(cls, device="cpu")
                if _is_device(device):
                    mode.device_generators.add(id(g))
                return g

        torch.Generator = Generator
        self._orig_parameter_new = torch.nn.Parameter.__dict__["__new__"]
        new = torch.nn.Parameter.__new__

        def parameter(cls, data=None, requires_grad=True):  # made in C++, unseen: where its data is
            p = new(cls, data, requires_grad)
            _tag(p, on_device(data))
            return p

        torch.nn.Parameter.__new__ = staticmethod(parameter)
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Generator = self._orig_generator
        torch.nn.Parameter.__new__ = self._orig_parameter_new
        return super().__exit__(*exc)

    def _violation(self, what: str) -> None:
        msg = f"{what} at {_where()}"
        if msg not in self.violations:
            self.violations.append(msg)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        owner = getattr(getattr(func, "__self__", None), "__name__", "")  # a property: its attribute name
        if name == "__get__" and owner == "device":
            return DEVICE if on_device(args[0]) else func(*args, **kwargs)
        if name == "__set__" and owner == "data":  # param.data = t: the parameter moves to where t is
            out = func(*args, **kwargs)
            _tag(args[0], on_device(args[1]))
            return out
        out = func(*args, **kwargs)
        if name == "__get__":  # .grad, .data, .T, ...: where their tensor is
            _tag(out, on_device(args[0]))
            return out
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        in_backward = torch._C._current_autograd_node() is not None
        # where the result is
        if name in ("to", "cuda", "type") and isinstance(args[0], torch.Tensor):
            target = _to_target(args, kwargs)
            dev = on_device(args[0]) if target is None else _is_device(target)
        elif name == "cpu":
            dev = False
        elif name.endswith("_") and not name.startswith("_") and tensors:
            dev = on_device(args[0] if args else tensors[0])  # in place: the tensor stays where it is
            if name != "copy_" and not in_backward and any(on_device(t) for t in tensors):  # copy_ crosses devices
                self._check_mixing(name, args, tensors)
        elif "device" in kwargs and kwargs["device"] is not None:
            dev = _is_device(kwargs["device"])
        elif name in _LIKE or name == "Parameter":
            dev = on_device(args[0])
        else:
            dev = any(on_device(t) for t in tensors)
            if dev and not in_backward and name not in _NO_CHECK:
                self._check_mixing(name, args, tensors)
        if name == "numpy" and on_device(args[0]):
            self._violation(".numpy() of an on-device tensor")
        if name == "__array__" and on_device(args[0]):
            self._violation("numpy conversion of an on-device tensor")
        if name in _RANDOM:
            g = kwargs.get("generator")
            if g is not None and dev and id(g) not in self.device_generators:
                self._violation(f"{name} on the device with a host generator")
        if name in HEAVY:
            self.heavy[(name, dev)] += 1
            if not dev and len(self.host_sites) < 50:
                self.host_sites[_where()] += 1
        if name not in ("numpy", "tolist", "item", "__array__"):
            _tag(out, dev)
        return out

    def _check_mixing(self, name, args, tensors) -> None:
        if name == "__getitem__":  # host index tensors are allowed (CUDA copies them)
            tensors = [args[0]]
        elif name == "__setitem__":  # so they are in x[idx] = value; the value must be where x is
            tensors = [t for t in (args[0], args[2]) if isinstance(t, torch.Tensor)]
        host = [t for t in tensors if not on_device(t) and t.dim() > 0]
        if host:
            shapes = ", ".join(str(tuple(t.shape)) for t in host[:3])
            self._violation(f"{name} mixes on-device tensors with host tensors {shapes}")


def _to_target(args, kwargs):
    """The device a `.to(...)` call moves to (a tensor: its placement), or None when it changes only dtype."""
    rest = list(args[1:])
    if "device" in kwargs:
        return kwargs["device"]
    if "other" in kwargs:
        return kwargs["other"]
    for a in rest:
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (str, torch.device)):
            return a
    return None
