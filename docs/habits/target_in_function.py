"""BROKEN on purpose: the target is defined inside a function.

A function is pickled by its module and name, and a function defined
inside another one has no name the child could look up: ``start()`` fails
in the parent.
"""

import multiprocessing


def main():
    def work(total):
        total.value += 1

    ctx = multiprocessing.get_context("spawn")
    total = ctx.Value("i", 0)
    child = ctx.Process(target=work, args=(total,))
    child.start()
    child.join()
    print(f"total: {total.value}")


if __name__ == "__main__":
    main()
