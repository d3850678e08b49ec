//! A 4×8 f32 matrix-multiply kernel for tract on wasm32 (SIMD128, relaxed-SIMD FMA), and the
//! dispatch tier that makes tract pick it for every f32 GEMM (N > 1).
//!
//! Why: yolov3-tiny's 13 convolutions take ~96 % of an inference in Wasm (tract's `OptMatMul`),
//! most of it in the kernel's k loop. Wasmtime puts an interruption check (epoch or fuel) at every loop
//! header, whose slow path is a call that clobbers every vector register; Cranelift then keeps
//! a kernel's accumulators in stack slots across the back edge, so tract's 8×8 wasm kernel
//! reloads and spills its 16 accumulators at every k step. This kernel holds a 4×8 tile (8
//! accumulators) in memory, read once per loop iteration of eight k steps and stored after
//! every second step, which keeps Cranelift from spilling within the iteration (see
//! [`add_mat_mul`]); it broadcasts the 4 values of A from one load with shuffles, and
//! multiplies-adds with `f32x4.relaxed_madd`, which Wasmtime compiles to one FMA where the CPU
//! has it (and to a multiply and an add elsewhere: both are valid results).
//!
//! It plugs into tract through tract-linalg's public registries (`inventory` collections of
//! kernels and of dispatch tiers), so tract still packs, tiles, fuses bias and activation and
//! handles border tiles; only the tile computation is ours. Its contract is tract's
//! `FusedKerSpec` program: `AddMatMul` reads A packed `[k][4]` and B packed `[k][8]`; tiles
//! are loaded and stored row-major as `[4][8]`.
//!
//! Off wasm32 nothing is registered and tract keeps its own kernels.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub use wasm::select;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) use wasm::{add_mat_mul, leaky, madd, splat};

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use core::arch::wasm32::*;
    #[cfg(test)]
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tract_linalg::Scaler;
    use tract_linalg::isa::{Arch, IsaSet};
    use tract_linalg::mmm::{DynKernel, FusedKerSpec, OutputStoreKer, Query, Suitable};
    use tract_linalg::mmm_routines::MmmRoutine;
    use tract_linalg::mmm_tiers::MmmTier;
    use tract_linalg::pack::Packing;
    use tract_onnx::prelude::DatumType;

    /// The name tract knows the kernel by (it shows in tract's plan dumps).
    const NAME: &str = "yolo_edge_wasm_f32_4x8";

    const MR: usize = 4;
    const NR: usize = 8;

    /// Whether the tier prefers this kernel (else tract's own choice stands).
    static PREFERRED: AtomicBool = AtomicBool::new(true);

    /// Choose the kernel for the plans optimised from now on: `"4x8"` (ours, the default) or
    /// `"tract"` (tract's own); false for an unknown name.
    pub fn select(name: &str) -> bool {
        let ours = match name {
            "4x8" => true,
            "tract" => false,
            _ => return false,
        };
        PREFERRED.store(ours, Ordering::Relaxed);
        true
    }

    /// Tiles computed by the kernel (tests only: proof that tract dispatched to it).
    #[cfg(test)]
    pub static TILES: AtomicUsize = AtomicUsize::new(0);

    fn kernel() -> DynKernel<MR, NR, f32> {
        let mut k =
            DynKernel::<MR, NR, f32>::new(NAME, kernel_f32, f32::packing(MR).align(16), f32::packing(NR).align(16));
        k.arch = Some(Arch::Wasm32Simd128);
        k
    }

    inventory::submit! { MmmRoutine { make: || kernel().mmm() } }

    /// Every f32 GEMM with more than one column; matrix-vector products stay with tract's
    /// wasm GEMV kernels.
    fn preferred(_isa: &IsaSet, acc: DatumType, query: &Query, _suitable: &[Suitable]) -> Option<&'static str> {
        if acc != DatumType::F32 || query.n == Some(1) {
            return None;
        }
        PREFERRED.load(Ordering::Relaxed).then_some(NAME)
    }

    inventory::submit! {
        MmmTier {
            arch: Some(Arch::Wasm32Simd128),
            // Above tract's own wasm tier (1): asked first, and an answer that a query cannot
            // use falls through to it.
            precedence: 2,
            name: "yolo-edge-wasm-fma",
            applies: |_| true,
            preferred,
        }
    }

    /// `a * b + c`, fused where the engine can.
    ///
    /// # Safety
    /// The CPU runs relaxed SIMD (Wasmtime's default): call it from a function compiled with
    /// `relaxed-simd`.
    #[inline(always)]
    pub(crate) unsafe fn madd(a: v128, b: v128, c: v128) -> v128 {
        f32x4_relaxed_madd(a, b, c)
    }

    /// Lane `L` of `v` in every lane.
    #[inline(always)]
    pub(crate) fn splat<const L: usize>(v: v128) -> v128 {
        match L {
            0 => i32x4_shuffle::<0, 0, 0, 0>(v, v),
            1 => i32x4_shuffle::<1, 1, 1, 1>(v, v),
            2 => i32x4_shuffle::<2, 2, 2, 2>(v, v),
            _ => i32x4_shuffle::<3, 3, 3, 3>(v, v),
        }
    }

    /// Leaky ReLU of slope `alpha` (splat) on every lane.
    #[inline(always)]
    pub(crate) fn leaky(v: v128, alpha: v128) -> v128 {
        v128_bitselect(v, f32x4_mul(alpha, v), f32x4_gt(v, f32x4_splat(0.0)))
    }

    /// Apply `f(operand_of_row, accumulator)` to both halves of each row.
    #[inline(always)]
    fn per_row(acc: &mut [[v128; 2]; MR], rows: *const f32, f: impl Fn(v128, v128) -> v128) {
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: tract passes MR values per row operand.
            let s = f32x4_splat(unsafe { *rows.add(r) });
            row[0] = f(s, row[0]);
            row[1] = f(s, row[1]);
        }
    }

    /// Apply `f(operand_of_columns, accumulator)` to every row.
    #[inline(always)]
    fn per_col(acc: &mut [[v128; 2]; MR], cols: *const f32, f: impl Fn(v128, v128) -> v128) {
        // SAFETY: tract passes NR values per column operand.
        let (lo, hi) = unsafe { (v128_load(cols as *const v128), v128_load(cols.add(4) as *const v128)) };
        for row in acc.iter_mut() {
            row[0] = f(lo, row[0]);
            row[1] = f(hi, row[1]);
        }
    }

    #[inline(always)]
    fn each(acc: &mut [[v128; 2]; MR], f: impl Fn(v128) -> v128) {
        for a in acc.iter_mut().flatten() {
            *a = f(*a);
        }
    }

    /// Multiply every accumulator by `factor`.
    #[inline(always)]
    fn scale(acc: &mut [[v128; 2]; MR], factor: f32) {
        let factor = f32x4_splat(factor);
        each(acc, |a| f32x4_mul(factor, a));
    }

    /// One element of a strided output tile.
    #[inline(always)]
    unsafe fn at(tile: &OutputStoreKer, r: usize, c: usize) -> *mut f32 {
        unsafe { tile.ptr.offset(tile.row_byte_stride * r as isize + tile.col_byte_stride * c as isize) as *mut f32 }
    }

    /// One k step: `c[r] += a[r] * b` for the 4 rows, A's 4 values (at `pa`) broadcast lane by
    /// lane from one load, B's 8 values at `pb`.
    #[inline(always)]
    unsafe fn k_step(c: &mut [[v128; 2]; MR], pa: *const v128, pb: *const v128) {
        // SAFETY: the caller points at one step's 4 values of A and 8 of B.
        let (a, b0, b1) = unsafe { (v128_load(pa), v128_load(pb), v128_load(pb.add(1))) };
        let s = splat::<0>(a);
        c[0] = [unsafe { madd(s, b0, c[0][0]) }, unsafe { madd(s, b1, c[0][1]) }];
        let s = splat::<1>(a);
        c[1] = [unsafe { madd(s, b0, c[1][0]) }, unsafe { madd(s, b1, c[1][1]) }];
        let s = splat::<2>(a);
        c[2] = [unsafe { madd(s, b0, c[2][0]) }, unsafe { madd(s, b1, c[2][1]) }];
        let s = splat::<3>(a);
        c[3] = [unsafe { madd(s, b0, c[3][0]) }, unsafe { madd(s, b1, c[3][1]) }];
    }

    /// A 4×8 tile's accumulators read from their home in memory (one volatile load per
    /// vector, spelled out: a loop here would stay a loop in the Wasm). See [`keep`].
    #[inline(always)]
    fn reload(home: &[[v128; 2]; MR]) -> [[v128; 2]; MR] {
        let p = home.as_ptr() as *const v128;
        // SAFETY: the 2 × MR vectors of `home`.
        let v = |j: usize| unsafe { p.add(j).read_volatile() };
        [[v(0), v(1)], [v(2), v(3)], [v(4), v(5)], [v(6), v(7)]]
    }

    /// Store a 4×8 tile's accumulators to their home in memory, volatile so that LLVM keeps
    /// every store. Called after every second step of a multiply-add loop, the stores pin
    /// those steps' FMAs in place in the machine code; see [`add_mat_mul`] for why that
    /// matters. (Tried in `Direct3x3` too, after each of its taps: its first layer ran ~30 %
    /// slower.)
    #[inline(always)]
    fn keep(home: &mut [[v128; 2]; MR], c: &[[v128; 2]; MR]) {
        let p = home.as_mut_ptr() as *mut v128;
        let [[c0, c1], [c2, c3], [c4, c5], [c6, c7]] = *c;
        // SAFETY: the 2 × MR vectors of `home`, exclusively borrowed.
        unsafe {
            p.write_volatile(c0);
            p.add(1).write_volatile(c1);
            p.add(2).write_volatile(c2);
            p.add(3).write_volatile(c3);
            p.add(4).write_volatile(c4);
            p.add(5).write_volatile(c5);
            p.add(6).write_volatile(c6);
            p.add(7).write_volatile(c7);
        }
    }

    /// Two k steps from `a` and `b` (B's next row `stride` vectors on), then [`keep`].
    #[inline(always)]
    unsafe fn two_steps(
        home: &mut [[v128; 2]; MR],
        c: &mut [[v128; 2]; MR],
        a: *const v128,
        b: *const v128,
        stride: usize,
    ) {
        // SAFETY: the caller points at two steps' values of A and B.
        unsafe {
            k_step(c, a, b);
            k_step(c, a.add(1), b.add(stride));
        }
        keep(home, c);
    }

    /// `acc += A · B` over `k` steps: A packed `[k][4]`, B `k` rows of 8 values, `b_stride`
    /// vectors apart (2 for a packed `[k][8]` panel; the Winograd GEMMs read B in place).
    ///
    /// The accumulators live in `acc`'s memory, and every second k step ends by storing all
    /// eight there (volatile stores, so that LLVM keeps them). That shapes the machine code, not
    /// the result: Cranelift places a pure instruction (an FMA) just before the first side
    /// effect that needs it, so without the stores every FMA of a loop iteration would be
    /// computed at its back edge, one accumulator's whole chain after another, with all the
    /// iteration's loads of A and B held live before them: more values than x86's 16 vector
    /// registers, hence spills. With a store every two steps, those steps' six loads, eight
    /// broadcasts and sixteen FMAs stay together and still fit in registers, and the stores
    /// cost half as many store µops as storing after every step. Eight steps per loop
    /// iteration, the accumulators read back from memory at its top: Wasmtime's interruption
    /// check (fuel or epoch) at every loop header has a call on its slow path that clobbers
    /// every vector register, so nothing vector-valued is carried across the back edge.
    ///
    /// Measured with fuel on, whole inferences of yolov3-tiny alternated one by one in one
    /// process (20 pairs per run, median ratio per pair): stores after every step made an
    /// inference 6.5-8 % faster than none (0.92-0.94; the loop spilled); stores after every
    /// second step instead, 6.6-9 % faster again (three runs, 1.066-1.090 for every step);
    /// after every fourth, 14-17 % slower (spills again); eight steps per iteration rather than
    /// four, 3-6 % faster (0.94-0.97). Broadcasting A with `v128.load32_splat` instead of one
    /// load and shuffles: 12 % slower. Broadcasting B instead (A's 4 values as the vector, 8
    /// `v128.load32_splat`s of B per step, no shuffles): 2x slower, since Cranelift cannot fold
    /// those loads into `vbroadcastss` with the stores in between and goes through a general
    /// register (`mov`, `vmovd`, `vpbroadcastd`) for each.
    #[inline(always)]
    pub(crate) unsafe fn add_mat_mul(
        acc: &mut [[v128; 2]; MR],
        k: usize,
        pa: *const v128,
        pb: *const v128,
        b_stride: usize,
    ) {
        // The next steps' A and B, advanced by pointer (B's rows `b_stride` vectors apart, their
        // offsets within an iteration computed once): 2.5-3.5 % faster per inference than
        // indexing both by the step (median ratio per pair 0.964-0.977, measured as above).
        let (s2, s4, s6, s8) = (2 * b_stride, 4 * b_stride, 6 * b_stride, 8 * b_stride);
        let (mut a, mut b, mut left) = (pa, pb, k);
        // SAFETY (both loops): `left` counts the steps the panels still hold.
        while left >= 8 {
            let mut c = reload(acc);
            unsafe {
                two_steps(acc, &mut c, a, b, b_stride);
                two_steps(acc, &mut c, a.add(2), b.add(s2), b_stride);
                two_steps(acc, &mut c, a.add(4), b.add(s4), b_stride);
                two_steps(acc, &mut c, a.add(6), b.add(s6), b_stride);
                // Wrapping: after the last step B's pointer may pass its buffer's end.
                (a, b) = (a.wrapping_add(8), b.wrapping_add(s8));
            }
            left -= 8;
        }
        // The last `k % 8` steps, if any (after the loop `acc` already holds the sums).
        if left > 0 {
            let mut c = reload(acc);
            while left > 0 {
                unsafe {
                    k_step(&mut c, a, b);
                    (a, b) = (a.wrapping_add(1), b.wrapping_add(b_stride));
                }
                left -= 1;
            }
            keep(acc, &c);
        }
    }

    /// Run one tile's fused program (see tract-linalg's `FusedKerSpec`); 0 when done.
    ///
    /// # Safety
    /// The pointers in `program` must be what tract's mmm driver passes for a 4×8 f32 kernel.
    #[target_feature(enable = "relaxed-simd")]
    unsafe fn kernel_f32(program: &[FusedKerSpec<f32>]) -> isize {
        #[cfg(test)]
        TILES.fetch_add(1, Ordering::Relaxed);
        let zero = f32x4_splat(0.0);
        let mut acc = [[zero; 2]; MR];
        for op in program {
            // SAFETY (every arm): pointers and sizes come from tract's driver, as documented
            // for each `FusedKerSpec` variant.
            unsafe {
                match *op {
                    FusedKerSpec::Done => break,
                    FusedKerSpec::Clear => acc = [[zero; 2]; MR],
                    FusedKerSpec::LoadTile(_col_major, row_major) => {
                        for (i, a) in acc.iter_mut().flatten().enumerate() {
                            *a = v128_load((row_major as *const v128).add(i));
                        }
                    }
                    FusedKerSpec::ScalarMin(s) => each(&mut acc, |a| f32x4_min(f32x4_splat(s), a)),
                    FusedKerSpec::ScalarMax(s) => each(&mut acc, |a| f32x4_max(f32x4_splat(s), a)),
                    FusedKerSpec::ScalarAdd(s) => each(&mut acc, |a| f32x4_add(f32x4_splat(s), a)),
                    FusedKerSpec::ScalarMul(s) => each(&mut acc, |a| f32x4_mul(f32x4_splat(s), a)),
                    FusedKerSpec::ScalarSub(s) => each(&mut acc, |a| f32x4_sub(f32x4_splat(s), a)),
                    FusedKerSpec::ScalarSubF(s) => each(&mut acc, |a| f32x4_sub(a, f32x4_splat(s))),
                    FusedKerSpec::LeakyRelu(alpha) => each(&mut acc, |a| leaky(a, f32x4_splat(alpha))),
                    FusedKerSpec::PerRowMin(rows) => per_row(&mut acc, rows, |s, a| f32x4_min(s, a)),
                    FusedKerSpec::PerRowMax(rows) => per_row(&mut acc, rows, |s, a| f32x4_max(s, a)),
                    FusedKerSpec::PerRowAdd(rows) => per_row(&mut acc, rows, |s, a| f32x4_add(s, a)),
                    FusedKerSpec::PerRowMul(rows) => per_row(&mut acc, rows, |s, a| f32x4_mul(s, a)),
                    FusedKerSpec::PerRowSub(rows) => per_row(&mut acc, rows, |s, a| f32x4_sub(s, a)),
                    FusedKerSpec::PerRowSubF(rows) => per_row(&mut acc, rows, |s, a| f32x4_sub(a, s)),
                    FusedKerSpec::PerColMin(cols) => per_col(&mut acc, cols, |s, a| f32x4_min(s, a)),
                    FusedKerSpec::PerColMax(cols) => per_col(&mut acc, cols, |s, a| f32x4_max(s, a)),
                    FusedKerSpec::PerColAdd(cols) => per_col(&mut acc, cols, |s, a| f32x4_add(s, a)),
                    FusedKerSpec::PerColMul(cols) => per_col(&mut acc, cols, |s, a| f32x4_mul(s, a)),
                    FusedKerSpec::PerColSub(cols) => per_col(&mut acc, cols, |s, a| f32x4_sub(s, a)),
                    FusedKerSpec::PerColSubF(cols) => per_col(&mut acc, cols, |s, a| f32x4_sub(a, s)),
                    // The quantisation steps are plain scalings for f32 accumulators.
                    FusedKerSpec::QScale(shift, policy, mult) => {
                        scale(&mut acc, Scaler::from_fuse_params(shift, policy, mult).scale)
                    }
                    FusedKerSpec::RoundingShiftRight(shift, _) => scale(&mut acc, 2f32.powi(-(shift as i32))),
                    FusedKerSpec::ShiftLeft(shift) => scale(&mut acc, 2f32.powi(shift as i32)),
                    FusedKerSpec::AddUnicast(tile) => {
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let mut row = [0f32; NR];
                            for (c, v) in row.iter_mut().enumerate() {
                                *v = *at(&tile, r, c);
                            }
                            let p = row.as_ptr() as *const v128;
                            acc[0] = f32x4_add(acc[0], v128_load(p));
                            acc[1] = f32x4_add(acc[1], v128_load(p.add(1)));
                        }
                    }
                    FusedKerSpec::AddRowColProducts(rows, cols) => {
                        let lo = v128_load(cols as *const v128);
                        let hi = v128_load(cols.add(4) as *const v128);
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let s = f32x4_splat(*rows.add(r));
                            acc[0] = madd(s, lo, acc[0]);
                            acc[1] = madd(s, hi, acc[1]);
                        }
                    }
                    FusedKerSpec::Store(tile) => {
                        for (r, acc) in acc.iter().enumerate() {
                            if tile.col_byte_stride == 4 {
                                let p = at(&tile, r, 0) as *mut v128;
                                v128_store(p, acc[0]);
                                v128_store(p.add(1), acc[1]);
                            } else {
                                let mut row = [0f32; NR];
                                let p = row.as_mut_ptr() as *mut v128;
                                v128_store(p, acc[0]);
                                v128_store(p.add(1), acc[1]);
                                for (c, v) in row.iter().enumerate() {
                                    *at(&tile, r, c) = *v;
                                }
                            }
                        }
                    }
                    FusedKerSpec::AddMatMul { k, pa, pb, packing: _ } => {
                        add_mat_mul(&mut acc, k, pa as *const v128, pb as *const v128, 2)
                    }
                }
            }
        }
        0
    }
}

#[cfg(all(test, target_arch = "wasm32", target_feature = "simd128"))]
mod tests {
    use std::sync::atomic::Ordering;

    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::einsum::EinSum;

    use super::wasm::TILES;

    /// `A · B` through a tract plan (A constant, as convolution weights are), and the tiles
    /// our kernel computed for it.
    fn tract_matmul(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> (Vec<f32>, usize) {
        let mut model = TypedModel::default();
        let x = model.add_source("b", f32::fact([k, n])).unwrap();
        let w = model.add_const("a", tensor1(a).into_shape(&[m, k]).unwrap()).unwrap();
        let y = model.wire_node("mm", EinSum::new("mk,kn->mn".parse().unwrap(), f32::datum_type()), &[w, x]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let input = tensor1(b).into_shape(&[k, n]).unwrap();
        let before = TILES.load(Ordering::Relaxed);
        let out = plan.run(tvec!(input.into_tvalue())).unwrap();
        let tiles = TILES.load(Ordering::Relaxed) - before;
        (out[0].to_plain_array_view::<f32>().unwrap().as_slice().unwrap().to_vec(), tiles)
    }

    /// Products of yolov3-tiny's shapes (and ragged ones) computed by tract on our kernel
    /// equal the plain triple loop; with `tract` selected, tract's own kernel computes them.
    #[test]
    fn tract_on_this_kernel_multiplies_like_the_reference() {
        for &(m, k, n) in &[(4, 1, 8), (16, 27, 173), (255, 64, 169), (7, 300, 9), (32, 144, 1000), (1024, 4608, 13)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
            for kernel in ["4x8", "tract"] {
                assert!(super::select(kernel));
                let (out, tiles) = tract_matmul(&a, &b, (m, k, n));
                if kernel == "tract" {
                    assert_eq!(tiles, 0, "{m}x{k}x{n}: tract's own kernel was asked for");
                } else {
                    // tract may finish a ragged edge with another kernel; the bulk is ours.
                    assert!(tiles >= m / 4 * (n / 8), "{m}x{k}x{n}: only {tiles} tiles on our kernel");
                }
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
                        let got = out[i * n + j];
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{kernel} {m}x{k}x{n} [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
            assert!(super::select("4x8"));
        }
        assert!(!super::select("8x8"));
    }
}
