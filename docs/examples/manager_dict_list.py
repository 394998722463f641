"""A dict and a list that child processes fill.

The article reaches for ``Manager().dict()`` and ``Manager().list()``. For
the dict, shmref.table has three ways behind one interface: a hash table in
shared memory (str and bytes keys, int, float, str and bytes values), an
owner process, and a Manager server; two children store an entry each in
every one. For the list, the standard library's Manager list: three
children append 100 items each.
"""

import multiprocessing

from shmref.channel import append_worker
from shmref.table import CtypesDict, ManagerDict, QueueDict, put_worker

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    for way in (CtypesDict, QueueDict, ManagerDict):
        with way(ctx=ctx) as table:
            children = [
                ctx.Process(target=put_worker, args=(table, "worker_result", 42)),
                ctx.Process(target=put_worker, args=(table, "from", "a child")),
            ]
            for child in children:
                child.start()
            for child in children:
                child.join()
            print(f"{way.__name__}: {dict(sorted(table.items()))}")
    with ctx.Manager() as manager:
        items = manager.list()
        children = [ctx.Process(target=append_worker, args=(items, w, 100)) for w in range(3)]
        for child in children:
            child.start()
        for child in children:
            child.join()
        collected = list(items)
    # append_worker appends (child, i) for i in range(100).
    in_order = all([i for c, i in collected if c == n] == list(range(100)) for n in range(3))
    print(f"Manager list: {len(collected)} items, each child's in order: {in_order}")
