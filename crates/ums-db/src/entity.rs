//! sea-orm entities, one module per table of the schema in `migrations/`.

macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod folder {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "folders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub parent_id: Option<i64>,
        pub rev: i64,
        pub created_at: i64,
    }
    no_relations!();
}

pub mod device {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "devices")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub unit_id: String,
        pub name: String,
        pub firmware: String,
        pub state: String,
        pub folder_id: Option<i64>,
        pub secret_hash: Option<String>,
        pub rev: i64,
        pub registered_at: i64,
        pub last_contact: Option<i64>,
        pub next_job_at: Option<i64>,
        /// The settings revision the device reported applying at its last check-in; `None`
        /// before its first check-in since schema 1.3.
        pub applied_revision: Option<i64>,
        /// The tag of the Shared Workplace session on the device; `None`: nobody logged in.
        /// Since schema 1.5.
        pub swp_session: Option<i64>,
    }
    no_relations!();
}

pub mod profile {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "profiles")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub description: String,
        pub priority: bool,
        pub rev: i64,
        pub created_at: i64,
    }
    no_relations!();
}

pub mod profile_param {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "profile_params")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub profile_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: String,
    }
    no_relations!();
}

pub mod assignment {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "assignments")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub profile_id: i64,
        pub device_id: Option<i64>,
        pub folder_id: Option<i64>,
    }
    no_relations!();
}

pub mod job {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub device_id: i64,
        pub kind: String,
        pub state: String,
        pub scheduled_at: i64,
        pub created_at: i64,
        pub sent_at: Option<i64>,
        pub finished_at: Option<i64>,
        pub result: String,
    }
    no_relations!();
}

pub mod admin {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "admins")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub username: String,
        pub password_hash: String,
        pub permissions: String,
        pub created_at: i64,
    }
    no_relations!();
}

pub mod admin_session {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "admin_sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        pub admin_id: i64,
        pub expires_at: i64,
    }
    no_relations!();
}

pub mod swp_directory {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "swp_directories")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub kind: String,
        pub domain: String,
        pub netbios: String,
        pub urls: String,
        pub base_dn: String,
        pub bind_dn: String,
        pub bind_password: String,
        pub ca_pem: String,
        pub starttls: bool,
        pub page_size: i64,
        pub login_attribute: String,
        pub user_filter: String,
        pub group_membership: String,
        pub rev: i64,
        pub created_at: i64,
    }
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Directory")
                .field("id", &self.id)
                .field("name", &self.name)
                .finish_non_exhaustive()
        }
    }
    no_relations!();
}

pub mod swp_principal {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "swp_principals")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub directory_id: i64,
        pub kind: String,
        pub name: String,
        pub key: String,
        pub rev: i64,
    }
    no_relations!();
}

pub mod swp_assignment {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "swp_assignments")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub profile_id: i64,
        pub principal_id: i64,
    }
    no_relations!();
}

pub mod swp_device {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "swp_devices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: i64,
        pub licensed: bool,
        pub enabled: bool,
        pub updated_at: i64,
    }
    no_relations!();
}

pub mod swp_session {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "swp_sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: i64,
        pub directory_id: i64,
        pub login: String,
        pub user_json: String,
        pub token_hash: String,
        pub started_at: i64,
        /// Since schema 1.5: the session's tag (also in `devices.swp_session`), the server that
        /// took the login, when the directory was last asked about the user.
        pub tag: Option<i64>,
        pub server_id: Option<String>,
        pub refreshed_at: Option<i64>,
    }
    no_relations!();
}

pub mod swp_folder {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "swp_folders")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub folder_id: i64,
        pub enabled: bool,
        pub updated_at: i64,
    }
    no_relations!();
}

pub mod swp_licence {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "swp_licences")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub seats: i64,
        pub expires_at: i64,
        pub created_at: i64,
    }
    no_relations!();
}

pub mod swp_seat {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "swp_seats")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: i64,
        pub licence_id: i64,
        pub taken_at: i64,
    }
    no_relations!();
}
