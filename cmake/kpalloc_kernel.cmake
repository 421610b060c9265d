# kpalloc for kernels: the same crate built freestanding and prelinked by
# tools/prelink.sh, as IMPORTED targets
#   kpalloc::kpalloc_kernel        x86_64-unknown-none, the target's default
#                                  (PIC, kernel code model): kernels linked
#                                  in the top 2 GiB (-mcmodel=kernel)
#   kpalloc::kpalloc_kernel_large  static relocations, large code model:
#                                  kernels linked above 4 GiB (-mcmodel=large)
#   kpalloc::kpalloc_kernel_i386   32-bit (i586-unknown-linux-gnu: no SSE,
#                                  core only), static relocations: i386
#                                  kernels such as the original Pintos (-m32)
# A kernel's CMake needs one line:
#   target_link_libraries(mykernel PRIVATE kpalloc::kpalloc_kernel)
# Included from the top-level CMakeLists.txt (needs CARGO).

set(KPALLOC_KERNEL_RUST_TARGET x86_64-unknown-none)
set(KPALLOC_KERNEL_I386_RUST_TARGET i586-unknown-linux-gnu)
set(KPALLOC_KERNEL_DIR ${CMAKE_BINARY_DIR}/kernel-lib)

# kpalloc_kernel_variant(NAME RUST_TARGET RUSTFLAGS TARGET)
#   builds ${KPALLOC_KERNEL_DIR}/NAME/libkpalloc.a for RUST_TARGET with
#   RUSTFLAGS and wraps it as the IMPORTED target TARGET (when TARGET is
#   not empty).
function(kpalloc_kernel_variant name rust_target rustflags imported)
  set(cargo_dir ${KPALLOC_KERNEL_DIR}/${name}/cargo)
  set(lib ${KPALLOC_KERNEL_DIR}/${name}/libkpalloc.a)
  add_custom_target(kpalloc_cargo_kernel_${name} ALL
    COMMAND ${CMAKE_COMMAND} -E env "RUSTFLAGS=${rustflags}" ${KPALLOC_KERNEL_CARGO_ENV}
      ${CARGO} rustc --quiet --release --lib --crate-type staticlib
      --no-default-features --features panic-handler
      --target ${rust_target} --target-dir ${cargo_dir}
    COMMAND ${CMAKE_SOURCE_DIR}/tools/prelink.sh
      ${cargo_dir}/${rust_target}/release/libkpalloc.a ${lib}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
    BYPRODUCTS ${lib}
    COMMENT "cargo rustc (freestanding library, ${name})"
    USES_TERMINAL)
  if(imported)
    add_library(${imported} STATIC IMPORTED GLOBAL)
    set_target_properties(${imported} PROPERTIES
      IMPORTED_LOCATION ${lib}
      INTERFACE_INCLUDE_DIRECTORIES ${CMAKE_SOURCE_DIR}/include)
    add_dependencies(${imported} kpalloc_cargo_kernel_${name})
  endif()
  set(KPALLOC_KERNEL_LIB_${name} ${lib} PARENT_SCOPE)
endfunction()

set(KPALLOC_KERNEL_CARGO_ENV "")
kpalloc_kernel_variant(default ${KPALLOC_KERNEL_RUST_TARGET} "" kpalloc::kpalloc_kernel)
kpalloc_kernel_variant(large ${KPALLOC_KERNEL_RUST_TARGET}
  "-C relocation-model=static -C code-model=large" kpalloc::kpalloc_kernel_large)
kpalloc_kernel_variant(i386 ${KPALLOC_KERNEL_I386_RUST_TARGET}
  "-C relocation-model=static" kpalloc::kpalloc_kernel_i386)

if(BUILD_TESTING)
  # One more build of the default variant, only to measure stack use: the
  # same compiler and flags plus -Zemit-stack-sizes (RUSTC_BOOTSTRAP lets
  # the stable compiler accept that one -Z flag), read by
  # tools/stack_usage.py in the ctest kernel_link_check.
  set(KPALLOC_KERNEL_CARGO_ENV RUSTC_BOOTSTRAP=1)
  kpalloc_kernel_variant(stacksizes ${KPALLOC_KERNEL_RUST_TARGET} "-Z emit-stack-sizes" "")
  kpalloc_kernel_variant(i386_stacksizes ${KPALLOC_KERNEL_I386_RUST_TARGET}
    "-C relocation-model=static -Z emit-stack-sizes" "")

  add_test(NAME kernel_link_check
    COMMAND ${CMAKE_SOURCE_DIR}/tools/kernel_link_check.sh
      ${KPALLOC_KERNEL_LIB_default} ${KPALLOC_KERNEL_LIB_stacksizes}
      ${CMAKE_SOURCE_DIR}/include ${CMAKE_BINARY_DIR}/kernel-link-check)
  set_tests_properties(kernel_link_check PROPERTIES TIMEOUT 120)
  add_test(NAME kernel_link_check_large
    COMMAND ${CMAKE_SOURCE_DIR}/tools/kernel_link_check.sh --large
      ${KPALLOC_KERNEL_LIB_large} ""
      ${CMAKE_SOURCE_DIR}/include ${CMAKE_BINARY_DIR}/kernel-link-check-large)
  set_tests_properties(kernel_link_check_large PROPERTIES TIMEOUT 120)
  add_test(NAME kernel_link_check_i386
    COMMAND ${CMAKE_SOURCE_DIR}/tools/kernel_link_check.sh --i386
      ${KPALLOC_KERNEL_LIB_i386} ${KPALLOC_KERNEL_LIB_i386_stacksizes}
      ${CMAKE_SOURCE_DIR}/include ${CMAKE_BINARY_DIR}/kernel-link-check-i386)
  set_tests_properties(kernel_link_check_i386 PROPERTIES TIMEOUT 120)

  # A Rust kernel's use (examples/rust-kernel): kpalloc without default
  # features beside the kernel's own panic handler, built as the kernel's
  # freestanding static library, and its test run on the host.
  set(rust_kernel ${CMAKE_SOURCE_DIR}/examples/rust-kernel/Cargo.toml)
  add_test(NAME rust_kernel_build
    COMMAND ${CARGO} rustc --quiet --release --lib --crate-type staticlib
      --target ${KPALLOC_KERNEL_RUST_TARGET} --manifest-path ${rust_kernel}
      --target-dir ${CMAKE_BINARY_DIR}/rust-kernel)
  add_test(NAME rust_kernel_test
    COMMAND ${CARGO} test --quiet --manifest-path ${rust_kernel}
      --target-dir ${CMAKE_BINARY_DIR}/rust-kernel)
  set_tests_properties(rust_kernel_build rust_kernel_test PROPERTIES TIMEOUT 300)
  # Without the `global` feature kpalloc defines none of its C symbols in
  # the kernel's library: no `page_alloc` of kpalloc's to clash with the
  # kernel's own.
  set(rust_kernel_lib
    ${CMAKE_BINARY_DIR}/rust-kernel/${KPALLOC_KERNEL_RUST_TARGET}/release/librust_kernel_example.a)
  add_test(NAME rust_kernel_defines_no_c_symbol
    COMMAND sh -c "nm --defined-only '${rust_kernel_lib}' > '${CMAKE_BINARY_DIR}/rust-kernel/symbols.txt' \
      && ! grep -E ' [A-Z] (page_|kpalloc_)' '${CMAKE_BINARY_DIR}/rust-kernel/symbols.txt'")
  set_tests_properties(rust_kernel_defines_no_c_symbol PROPERTIES DEPENDS rust_kernel_build)
endif()
