"""BROKEN on purpose: no ``if __name__ == "__main__":`` guard.

Under spawn (and forkserver) a child starts a fresh interpreter and runs
this file again, as module ``__mp_main__``, to find ``work``. Without the
guard that run reaches ``start()`` again, which raises RuntimeError in the
child. The parent is not told: it prints the untouched total and exits 0.
"""

import multiprocessing


def work(total):
    total.value += 1


ctx = multiprocessing.get_context("spawn")
total = ctx.Value("i", 0)
child = ctx.Process(target=work, args=(total,))
child.start()
child.join()
print(f"total: {total.value}")
