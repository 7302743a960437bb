-- Issue 25: volunteers whose run of a registered kernel's unit failed on their device
-- (lost the device, crashed, refused the shader), once per kernel and wallet: with
-- expired leases, what suspends a kernel.
CREATE TABLE kernel_failures (
    kernel TEXT NOT NULL,
    wallet TEXT NOT NULL,
    failed_ms INTEGER NOT NULL,
    PRIMARY KEY (kernel, wallet)
);
