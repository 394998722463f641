"""BROKEN on purpose: the target is defined under the main guard.

The child runs this file again as ``__mp_main__``, where the guard is
false, so ``work`` is never defined there: the child cannot unpickle its
target and exits with code 1. The parent carries on.
"""

import multiprocessing

if __name__ == "__main__":

    def work(total):
        total.value += 1

    ctx = multiprocessing.get_context("spawn")
    total = ctx.Value("i", 0)
    child = ctx.Process(target=work, args=(total,))
    child.start()
    child.join()
    print(f"total: {total.value}, child's exit code: {child.exitcode}")
