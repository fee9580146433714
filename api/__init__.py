"""spikeloom's Python API: a model file in, the golden model's results, the generated accelerator,
its co-simulation against the golden model and its energy out.

::

    import spikeloom

    m = spikeloom.load("model.slm")                 # a QuantModel, validated
    g = spikeloom.golden(m, x)                      # x: (B, F) or (B, C, H, W) quantized ints
    g.pred, g.exit_t, g.z, g.counters()             # classes, timesteps, scores, counters
    r = spikeloom.cosim(m, x, pes=8)                # generate + co-simulate every image
    r.mismatches, r.cycles, r.images, r.energy      # 0 when the RTL equals the golden model

The functions import their machinery when called: ``import spikeloom`` imports neither torch nor
Amaranth. The command line (``spikeloom ...``) runs the same code (``spikeloom.flows``). This
folder (``api/``) is the package ``spikeloom`` (pyproject.toml's ``package-dir``); its
subpackages keep their folders: ``spikeloom.model`` is ``model/``, ``spikeloom.hw`` is ``hw/``,
``spikeloom.sim`` is ``sim/`` and ``spikeloom.flows`` is ``flows/``.
"""

from pathlib import Path

__all__ = ["__version__", "load", "golden", "generate", "cosim", "energy"]


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spikeloom")
    except PackageNotFoundError:
        return "unknown"


#: The installed distribution's version (pyproject.toml), ``"unknown"`` when it is not installed.
__version__ = _version()


def load(path):
    """Read and validate a model file (``.slm``: ``spikeloom quantize``, ``run`` or ``import``).

    Returns a :class:`spikeloom.model.ir.QuantModel`. A bad file raises
    :class:`spikeloom.model.errors.ModelFileError` naming the file and the problem.
    """
    from spikeloom.model import modelfile

    return modelfile.load(path)


def _model(m):
    return m if hasattr(m, "layers") else load(m)


def golden(model, x, *, pes=None, exit_threshold=None, trace=False):
    """Run the integer golden model (the bit-exact reference of the hardware) on images ``x``.

    Parameters
    ----------
    model : QuantModel, or a model file's path.
    x : quantized images, ``(B, F)`` or ``(B, C, H, W)`` unsigned integers in ``[0, 2^input_bits)``
        (``spikeloom.model.golden.quantize_input(model, images)`` maps [0, 1] images there).
    pes : the weight storage that the ``weight_reads`` counters assume: the generator's choice for
        ``pes`` processing elements (default: every layer dense).
    exit_threshold : override the model's early-exit margin.
    trace : keep every layer's spikes (``.spikes``).

    Returns
    -------
    spikeloom.model.golden.GoldenResult
        ``pred`` (B,) classes, ``exit_t`` (B,) executed timesteps, ``z`` (T, B, K) accumulated
        output scores after each timestep, ``counters()`` ``{layer: {counter: (B,)}}``,
        ``cycle_bound(model, n_pe)``.
    """
    from spikeloom.model import golden as ref

    model = _model(model)
    sparse = ()
    if pes is not None:
        from spikeloom.flows.steps import weight_storage

        sparse = weight_storage(model, pes)["sparse_segments"]
    if exit_threshold is not None:
        from spikeloom.model.ir import check_exit_threshold

        check_exit_threshold(exit_threshold, "exit_threshold")
    return ref.run(model, ref.check_input(model, x), exit_threshold=exit_threshold, sparse=sparse, trace=trace)


def generate(model, pes=8, out="build/rtl", *, weights="rom", trace=False, force=False):
    """Generate the accelerator for ``model`` on ``pes`` processing elements into the folder ``out``.

    Writes ``spikeloom_accel.v`` (Verilog), ``ports.json`` (its ports and payload fields) and
    ``mem/`` (weight memory images), as ``spikeloom generate`` does: the folder appears whole or not
    at all, and a non-empty folder spikeloom did not write is refused unless ``force``.
    ``weights``: ``"rom"`` (initialised memories) or ``"load"`` (streamed in through ``i_weights``);
    ``trace``: add the spike trace port. Returns ``out`` as a :class:`~pathlib.Path`.
    """
    from spikeloom.flows import output
    from spikeloom.flows.common import check_pes
    from spikeloom.flows.steps import check_hardware
    from spikeloom.hw.accel import generate as gen

    model = _model(model)
    check_pes(pes, "pes")
    check_hardware(model, pes, "generate")
    with output.staged(out, f"spikeloom.generate(pes={pes}, weights={weights!r}, trace={trace})", force,
                       "out") as (stage, _):
        gen(model, pes, stage, trace=trace, weights=weights)
    return Path(out)


def cosim(model, x=None, *, pes=8, simulator="verilator", dataset=None, images=None, build=None, waves=None,
          energy=True, tech=None, seed=0, verbose=False):
    """Generate the accelerator and co-simulate images on it, each compared with the golden model
    (what ``spikeloom cosim`` runs).

    Parameters
    ----------
    model : QuantModel, or a model file's path.
    x : quantized images as for :func:`golden` (an array or a ``.npy`` path); or ``dataset``:
        ``"digits"``, ``"cifar:PATH"`` or ``"folder:PATH"`` (its test split, with labels).
    pes : processing elements N. simulator : ``"verilator"`` or ``"icarus"``.
    images : only the first ``images`` images.
    build : the run's folder (model copy, Verilog, co-simulation, ``report.json``); default: a new
        temporary folder (``result.build``).
    waves : ``"A:B"``: an FST waveform of images A..B, co-simulated again alone (``result.waves``).
    energy : energy per inference from the RTL's counters (``result.energy``).
    tech : technology table (JSON) of the energy model; default the 45 nm table.
    seed : the random idle and back-pressure on the streams. verbose : print the steps' logs and table.

    Returns
    -------
    spikeloom.flows.cosim.CosimResult
        ``mismatches`` (0: every class, timestep and counter equal), ``n_images``, ``images``
        (per-image :class:`~spikeloom.sim.records.InferenceRecord`: ``pred``, ``timesteps``,
        ``counters``, ``cycles``), ``cycles``, ``cycle_bound``, ``first_mismatches``, ``energy``,
        ``waves``, ``build``, ``report``.
    """
    import tempfile

    from spikeloom.flows.cosim import cosim_model

    if build is None:
        build = tempfile.mkdtemp(prefix="spikeloom-cosim-")
    return cosim_model(model, x, dataset=dataset, pes=pes, simulator=simulator, images=images, build=build,
                       waves=waves, energy=energy, tech=tech, seed=seed, input_name="x",
                       log=print if verbose else (lambda *a, **k: None))


def energy(model, x, hardware, *, tech=None):
    """Energy per inference of images ``x`` on the accelerator generated in folder ``hardware``
    (:func:`generate`'s ``out``), from the golden model's counters (the RTL's are equal:
    :func:`cosim` checks that, and its ``energy`` uses the RTL's own) and the cycle model's
    cycles, which leakage follows (no stream stalls: a co-simulation with random idle and
    back-pressure takes more cycles).

    ``tech``: a technology table (JSON path); default the 45 nm table (``spikeloom.model.power``).
    Returns the report's ``energy`` section: ``per_inference_nj``, ``breakdown`` (nJ by event
    kind), ``by_layer``, ``fixed_t_per_inference_nj``, ``dense_per_inference_nj``, the savings,
    ``pj_per_sop``, the GPU baseline and the technology.
    """
    from spikeloom.flows import energy as flow
    from spikeloom.model import golden as ref
    from spikeloom.model.power import DEFAULT_TECH, load_tech
    from spikeloom.sim.ports import Ports

    from spikeloom.flows.steps import weight_storage

    model = _model(model)
    weight_storage(model, ports=Path(hardware) / "ports.json")  # refuses hardware generated for another model
    sec, _ = flow.compute(model, Ports.load(Path(hardware)), ref.check_input(model, x), None,
                          load_tech(tech or DEFAULT_TECH), log=lambda *a, **k: None)
    return sec
