"""tasks.py of the kombu example (seed 002)."""


def hello_task(who="world"):
    print("Hello %s" % (who, ), flush=True)
