from taskq.system import Running
from tests.conftest import eventually


async def test_echo_task_completes(running: Running) -> None:
    task = await running.queue.submit("taskq.echo", {"x": 1})

    async def done() -> bool:
        return (await running.queue.get_task(task.id)).status == "completed"

    await eventually(done, what="echo task to complete")
    assert (await running.queue.get_task(task.id)).result == {"x": 1}
