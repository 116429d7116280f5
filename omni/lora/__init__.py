"""Per-request LoRA adapters, applied per row inside one batched forward (see omni.lora.rows).

Import the modules themselves: `omni.lora.spec` stays free of torch for the scheduler's side.
"""
