"""`python -m gpt.names_task`: the names assistant's data; `--rl gpt.names_task:reward` names its rewards.

The command lives in gpt/posttraining/names_task.py; this name is the one users type and recorded commands keep."""

from gpt.posttraining.names_task import main, namelike_reward, reward

__all__ = ["main", "namelike_reward", "reward"]

if __name__ == "__main__":
    main()
