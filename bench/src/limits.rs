//! Named limits of the bench tools, in one place.

/// Most symbols `bench gen` can name (`S0001`..`S9999`: four digits).
pub const GEN_SYMBOLS_MAX: u32 = 9_999;

/// Open orders the generator remembers as targets for later cancels and fills. Beyond it, a
/// new order replaces a random remembered one (which then simply stays open for ever), so the
/// generator's memory is bounded whatever `--orders` is.
pub const GEN_OPEN_ORDERS_MAX: usize = 1 << 16;
