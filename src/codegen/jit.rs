//! The Cranelift side: the host ISA, one `JITModule` per network, and the functions in it —
//! one per kernel and an entry that runs them all for each image of a batch.
//!
//! Settings follow docs/CRANELIFT.md §4: `opt_level=none`, because the kernels arrive already
//! blocked, unrolled and strength-reduced, and `none` keeps their instruction order (measured
//! fastest and most predictable) and compiles several times faster; `is_pic=false`, which
//! cranelift-jit 0.135 requires; the verifier in debug builds and in checked mode.

use super::kernel::KernelTranslator;
use super::layout::TableLayout;
use super::{CodegenError, CodegenOptions};
use crate::lower::ir::Kernel;
use crate::lower::LoopProgram;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, MemFlagsData, Signature, UserFuncName,
};
use cranelift_codegen::isa::{TargetFrontendConfig, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module, ModuleReloc};

fn cranelift_error(what: &str, error: impl std::fmt::Display) -> CodegenError {
    CodegenError::Cranelift(format!("{what}: {error}"))
}

/// A JIT module being filled with one network's functions.
pub(super) struct Generator {
    pub module: JITModule,
    maker: FunctionMaker,
    entry_signature: Signature,
    function_context: FunctionBuilderContext,
}

/// What building a kernel's CLIF needs, without the module: shared by the threads that
/// build and compile kernels at once.
struct FunctionMaker {
    has_fma: bool,
    checked: bool,
    config: TargetFrontendConfig,
    kernel_signature: Signature,
}

/// Builds a kernel's CLIF and compiles it to machine code, on any thread.
pub(super) struct KernelCompiler<'a> {
    isa: &'a dyn TargetIsa,
    maker: &'a FunctionMaker,
}

impl KernelCompiler<'_> {
    pub fn compile(
        &self,
        id: FuncId,
        program: &LoopProgram,
        layout: &TableLayout,
        kernel: &Kernel,
        function_context: &mut FunctionBuilderContext,
    ) -> Result<MachineCode, CodegenError> {
        let func = self
            .maker
            .kernel_function(id, program, layout, kernel, function_context);
        let mut context = Context::for_function(func);
        context
            .compile(self.isa, &mut ControlPlane::default())
            .map_err(|e| cranelift_error(&kernel.name, format!("{:?}", e.inner)))?;
        let code = context
            .compiled_code()
            .ok_or_else(|| cranelift_error(&kernel.name, "no code after compiling"))?;
        let relocs = code
            .buffer
            .relocs()
            .iter()
            .map(|reloc| ModuleReloc::from_mach_reloc(reloc, &context.func, id))
            .collect();
        Ok(MachineCode {
            alignment: u64::from(code.buffer.alignment),
            bytes: code.code_buffer().to_vec(),
            relocs,
        })
    }
}

/// A kernel compiled to machine code, not yet placed in the module.
pub(super) struct MachineCode {
    alignment: u64,
    bytes: Vec<u8>,
    relocs: Vec<ModuleReloc>,
}

impl Generator {
    pub fn new(options: &CodegenOptions) -> Result<Generator, CodegenError> {
        let mut flags = settings::builder();
        let verify = if options.checked || cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        };
        for (name, value) in [
            ("opt_level", "none"),
            ("is_pic", "false"),
            ("use_colocated_libcalls", "false"),
            ("enable_verifier", verify),
        ] {
            flags
                .set(name, value)
                .map_err(|e| cranelift_error("setting", e))?;
        }
        let isa_builder = cranelift_native::builder()
            .map_err(|e| CodegenError::Isa(format!("this CPU is not supported: {e}")))?;
        let isa = isa_builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| cranelift_error("ISA", e))?;
        let flag = |name: &str| {
            isa.isa_flags()
                .iter()
                .any(|v| v.name == name && v.as_bool() == Some(true))
        };
        // Without both, Cranelift lowers `fma` to a libcall per lane (docs/CRANELIFT.md §5.2).
        let has_fma = flag("has_avx") && flag("has_fma");
        let builder = JITBuilder::with_isa(isa, default_libcall_names());
        let module = JITModule::new(builder);

        let mut kernel_signature = module.make_signature();
        for _ in 0..4 {
            kernel_signature.params.push(AbiParam::new(I64));
        }
        let mut entry_signature = module.make_signature();
        for _ in 0..2 {
            entry_signature.params.push(AbiParam::new(I64));
        }
        let maker = FunctionMaker {
            has_fma,
            checked: options.checked,
            config: module.target_config(),
            kernel_signature,
        };
        Ok(Generator {
            module,
            maker,
            entry_signature,
            function_context: FunctionBuilderContext::new(),
        })
    }

    pub fn declare_kernel(&mut self, kernel: &Kernel) -> Result<FuncId, CodegenError> {
        self.module
            .declare_function(&kernel.name, Linkage::Local, &self.maker.kernel_signature)
            .map_err(|e| cranelift_error(&kernel.name, e))
    }

    pub fn declare_entry(&mut self) -> Result<FuncId, CodegenError> {
        self.module
            .declare_function("entry", Linkage::Local, &self.entry_signature)
            .map_err(|e| cranelift_error("entry", e))
    }

    /// The CLIF of a kernel.
    pub fn kernel_function(
        &mut self,
        id: FuncId,
        program: &LoopProgram,
        layout: &TableLayout,
        kernel: &Kernel,
    ) -> Function {
        self.maker
            .kernel_function(id, program, layout, kernel, &mut self.function_context)
    }

    /// What compiles kernels on other threads: the ISA and what building CLIF needs, not
    /// the module (which is not `Sync`).
    pub fn compiler(&self) -> KernelCompiler<'_> {
        KernelCompiler {
            isa: self.module.isa(),
            maker: &self.maker,
        }
    }

    /// Places a compiled kernel in the module.
    pub fn place(&mut self, id: FuncId, code: &MachineCode) -> Result<(), CodegenError> {
        self.module
            .define_function_bytes(id, code.alignment, &code.bytes, &code.relocs)
            .map_err(|e| cranelift_error("placing the code", format!("{e:?}")))
    }

    /// The CLIF of `entry(table, n_images)`: for each image, each kernel over all its parts,
    /// called through the table.
    pub fn entry_function(
        &mut self,
        id: FuncId,
        program: &LoopProgram,
        layout: &TableLayout,
    ) -> Function {
        let mut func = Function::with_name_signature(
            UserFuncName::user(0, id.as_u32()),
            self.entry_signature.clone(),
        );
        let kernel_signature = func.import_signature(self.maker.kernel_signature.clone());
        let config = self.module.target_config();
        let mut b = FunctionBuilder::new(&mut func, &mut self.function_context);
        let start = b.create_block();
        b.append_block_params_for_function_params(start);
        b.switch_to_block(start);
        b.seal_block(start);
        let (table, n_images) = (b.block_params(start)[0], b.block_params(start)[1]);
        let header = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        let image = b.append_block_param(header, I64);
        let zero = b.ins().iconst(I64, 0);
        b.ins().jump(header, &[zero.into()]);
        b.switch_to_block(header);
        let more = b.ins().icmp(IntCC::SignedLessThan, image, n_images);
        b.ins().brif(more, body, &[], exit, &[]);
        b.switch_to_block(body);
        b.seal_block(body);
        let flags = MemFlagsData::new().with_notrap().with_readonly();
        for (k, kernel) in program.kernels.iter().enumerate() {
            let offset = (layout.kernel_slot(k) * 8) as i32;
            let function = b.ins().load(I64, flags, table, offset);
            let begin = b.ins().iconst(I64, 0);
            let end = b.ins().iconst(I64, kernel.parts() as i64);
            b.ins()
                .call_indirect(kernel_signature, function, &[table, image, begin, end]);
        }
        let next = b.ins().iadd_imm_s(image, 1);
        b.ins().jump(header, &[next.into()]);
        b.seal_block(header);
        b.switch_to_block(exit);
        b.seal_block(exit);
        b.ins().return_(&[]);
        b.finalize(config);
        func
    }

    pub fn define(&mut self, id: FuncId, func: Function) -> Result<(), CodegenError> {
        let mut context = Context::for_function(func);
        self.module
            .define_function(id, &mut context)
            .map_err(|e| cranelift_error("compiling", format!("{e:?}")))
    }
}

impl FunctionMaker {
    fn kernel_function(
        &self,
        id: FuncId,
        program: &LoopProgram,
        layout: &TableLayout,
        kernel: &Kernel,
        function_context: &mut FunctionBuilderContext,
    ) -> Function {
        let mut func = Function::with_name_signature(
            UserFuncName::user(0, id.as_u32()),
            self.kernel_signature.clone(),
        );
        let builder = FunctionBuilder::new(&mut func, function_context);
        KernelTranslator::new(kernel, builder, program, layout, self.has_fma, self.checked)
            .translate(kernel, self.config);
        func
    }
}
