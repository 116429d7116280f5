"""Frame interpolation: RIFE's IFNet (`ifnet`), its weights (`weights`), the frame loop
(`frames`) and the worker thread that runs it off the engine's thread (`worker`)."""
