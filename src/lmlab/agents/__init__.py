"""Tool-using agents: a ReAct-style loop over tools (calculator, Python in the sandbox, RAG search,
read-only SQL), every step traced.

    from lmlab.agents import Agent, lm_model, make_tools
    result = Agent(lm_model(lm), make_tools("calculator,python"), max_steps=6, trace_dir="run").run(task)
"""

from lmlab.agents.react import Agent, AgentResult, Step, endpoint_model, lm_model, parse_calls, run_agent
from lmlab.agents.tools import Tool, calculate, make_tools

__all__ = ["Agent", "AgentResult", "Step", "Tool", "calculate", "endpoint_model", "lm_model", "make_tools", "parse_calls", "run_agent"]
