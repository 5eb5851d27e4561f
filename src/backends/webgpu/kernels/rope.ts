// WebGPU kernels: rope (being written).
export {};
