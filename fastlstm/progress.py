"""A progress bar for long loops when tqdm is installed (an optional extra), plain output when
it is not."""


def progress(iterable, description, **options):
    """``(iterable, write)``: the iterable wrapped in tqdm's bar and tqdm's ``write``, which
    prints without breaking the bar, when tqdm is installed; else the iterable as it is and
    ``print``. ``options`` go to tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable, print
    return tqdm(iterable, desc=description, **options), tqdm.write
