import multiprocessing

from shmref.counter import SlotCounter, add_worker

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    with SlotCounter(ctx=ctx) as counter:
        workers = [ctx.Process(target=add_worker, args=(counter, 10_000)) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        print(counter.get())  # 40000
